"""What the browser tests share: the Chromium they drive (Debian's, by its path), its flags,
and `Run`, the server and page with what the page did (its request URLs, console errors)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers import Server

CHROMIUM = os.environ.get("FSUP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DEADLINE_MS = 20_000


def require_browser() -> Any:
    """Playwright's `expect`, or skip the calling test module: without playwright or without
    a Chromium at CHROMIUM the browser tests cannot run, and say why."""
    import pytest  # noqa: PLC0415 - only the test modules call it

    api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install Debian's (apt-get install -y chromium) or set "
            "FSUP_CHROMIUM to a Chromium binary; the browser tests did not run",
            allow_module_level=True,
        )
    return api.expect


@contextmanager
def chromium_page(server: Server) -> Iterator[Run]:
    """One Chromium page (1280x800, the tests' deadline) on `server`, for a module's tests."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - the tests skip without it

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(DEADLINE_MS)
        yield Run(server, page)
        browser.close()


def free_port() -> int:
    """A free port, picked now, so that fsup can be restarted under the page on the same one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Run:
    """The server, the page, and what the page did: every request URL, console errors."""

    def __init__(self, server: Server, page: Any) -> None:
        self.server, self.page = server, page
        self.urls: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def state_of(self, formation_id: str) -> Any:
        return self.page.locator(f'table.fleet tr[data-id="{formation_id}"] [data-testid=state]')

    def row(self, formation_id: str) -> Any:
        return self.page.locator(f'table.fleet tr[data-id="{formation_id}"]')

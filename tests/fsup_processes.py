"""The `fsup serve` processes a test started under a folder of homes: none may outlive it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest


def fsup_servers(under: Path) -> list[psutil.Process]:
    """Live `fsup serve` processes whose home (`MUXI_HOME`) is under `under`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if "supervisor" not in cmdline or "serve" not in cmdline:
                continue
            home = proc.environ().get("MUXI_HOME", "")
            if proc.status() != psutil.STATUS_ZOMBIE and Path(home).is_relative_to(under):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.fixture(autouse=True)
def no_fsup_left(tmp_path: Path) -> Iterator[None]:
    """After the test (and the fixtures that stop its servers), no server of its homes runs."""
    yield
    left = fsup_servers(tmp_path)
    for proc in left:
        proc.kill()
    assert not left, f"fsup serve processes left behind: {[p.pid for p in left]}"

"""`/ui/`: the web dashboard, static files from the package (no CDN, no build step).

The files are read once, on first use, from `static/ui/` beside this module, and only the
ones found there are served: a name is looked up in that fixed set, never joined to a path,
so no request can reach another file. The page authenticates like any `/api/v1` client
(bootstrap, session cookie, EventSource); nothing here needs auth.

Every answer of `/ui` and `/api/v1` carries fsup's security headers; pages also get a strict
Content-Security-Policy: scripts and styles from this origin only, no inline script and no
`eval` (hence Alpine's CSP build), no framing. Proxied formation answers are left as the
formation sent them.
"""

from __future__ import annotations

import mimetypes
from functools import cache
from importlib import resources
from typing import Any

from quart import Blueprint, Response, redirect, request

from supervisor.core.errors import FsupError

PREFIX = "/ui"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".md": "text/plain"}


@cache
def files() -> dict[str, tuple[bytes, str]]:
    """Every file under `static/ui/` by its path there, with its Content-Type."""
    root = resources.files("supervisor.http").joinpath("static", "ui")
    found: dict[str, tuple[bytes, str]] = {}

    def walk(folder: Any, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            else:
                name = f"{prefix}{entry.name}"
                suffix = "." + name.rsplit(".", 1)[-1]
                kind = TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "text/plain"
                found[name] = (entry.read_bytes(), f"{kind}; charset=utf-8")

    walk(root, "")
    return found


def asset(name: str) -> Response:
    found = files().get(name)
    if found is None:
        raise FsupError("NOT_FOUND", f"no such file in the dashboard: {name[:100]!r}")
    body, kind = found
    response = Response(body, 200, {"Content-Type": kind, "Cache-Control": "no-cache"})
    if kind.startswith("text/html"):
        response.headers["Content-Security-Policy"] = CSP
    return response


async def ui_root() -> Any:
    return redirect(f"{PREFIX}/", 308)


async def ui_index() -> Any:
    return asset("index.html")


async def ui_asset(name: str) -> Any:
    return asset(name)


async def security_headers(response: Response) -> Response:
    """fsup's own answers under /ui and /api/v1 (not the proxied formations')."""
    if request.path.startswith((PREFIX, "/api/v1")):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def blueprint() -> Blueprint:
    """The dashboard's pages, and the security headers on every answer of /ui and /api/v1
    (an app-wide after-request hook, installed with the Blueprint)."""
    bp = Blueprint("dashboard", __name__)
    bp.get(PREFIX)(ui_root)
    bp.get(f"{PREFIX}/")(ui_index)
    bp.get(f"{PREFIX}/<path:name>")(ui_asset)
    bp.after_app_request(security_headers)
    return bp

"""`/api/v1/session/check`, `/api/v1/session/logout`, `/api/v1/token/rotate`: what a browser
client needs beside opening a session (as rust-mule gives its UI).

A logout ends that session on the server (its id is recorded as ended, `sessions.py`), so a
copy of the cookie replayed later is refused. Rotating the token writes a new `api.token`:
every session signed with the old one stops verifying, and bearer clients must bootstrap
again.
"""

from __future__ import annotations

import secrets
from typing import Any

from quart import Blueprint, make_response

from supervisor.http.api_auth import COOKIE_NAME
from supervisor.http.api_v1 import PREFIX, api_auth_hook, current_session, revoked_sessions
from supervisor.http.services import services
from supervisor.storage.home import write_private


async def session_check() -> Any:
    _, expiry = current_session()
    return {"ok": True, "expires_at": expiry}


async def session_logout() -> Any:
    session_id, expiry = current_session()
    # In the trio thread, not a worker: two logouts never write the file at once.
    revoked_sessions().revoke(session_id, expiry)
    response = await make_response({"ok": True})
    response.delete_cookie(COOKIE_NAME, path=PREFIX)
    return response


async def token_rotate() -> Any:
    svc = services()
    fresh = secrets.token_hex(32)
    write_private(svc.home.api_token, fresh + "\n")  # small; one writer at a time
    svc.api_token = fresh
    revoked_sessions().clear()
    response = await make_response({"token": fresh, "sessions_ended": True})
    response.delete_cookie(COOKIE_NAME, path=PREFIX)
    return response


def blueprint() -> Blueprint:
    bp = Blueprint("session_api", __name__)
    bp.before_request(api_auth_hook)
    bp.get(f"{PREFIX}/session/check")(session_check)
    bp.post(f"{PREFIX}/session/logout")(session_logout)
    bp.post(f"{PREFIX}/token/rotate")(token_rotate)
    return bp

"""Authentication for `/api/v1` (seed 003): a bearer token for REST, a session cookie for
the event stream, a loopback-only bootstrap. Pure functions apart from the token file.

The session cookie is stateless: `<expiry>.<HMAC-SHA256(token, expiry)>`, so sessions survive
a restart of fsup and no session table is needed; replacing `api.token` ends them all. A cookie
is matched whole against its exact shape before any number is read from it (`str.isdigit`
accepts '²', which `int` then refuses): anything else is a 401, never a 500.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from pathlib import Path

from supervisor.core.errors import FsupError
from supervisor.storage.home import write_private

COOKIE_NAME = "rm_session"
SESSION_TTL_S = 12 * 3600
# `<unix seconds>.<64 lowercase hex>`, ASCII only; 12 digits reach the year 33658.
SESSION_PATTERN = re.compile(r"([0-9]{1,12})\.([0-9a-f]{64})")


def load_or_create_token(path: Path) -> str:
    """The bearer token in `server/api.token` (64 hex characters, mode 0600)."""
    if path.exists():
        token = path.read_text().strip()
        if len(token) == 64 and all(c in "0123456789abcdef" for c in token):
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return token
    token = secrets.token_hex(32)
    write_private(path, token + "\n")
    return token


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bearer(token: str, authorization: str | None) -> None:
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise FsupError(
            "UNAUTHORIZED",
            "missing 'Authorization: Bearer <token>'; get the token from "
            "GET /api/v1/auth/bootstrap on this machine",
        )
    if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode()):
        raise FsupError("UNAUTHORIZED", "invalid bearer token")


def _signature(token: str, expiry: int) -> str:
    return hmac.new(token.encode(), str(expiry).encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> tuple[str, int]:
    """A cookie value and its expiry (unix seconds)."""
    expiry = int(now if now is not None else time.time()) + SESSION_TTL_S
    return f"{expiry}.{_signature(token, expiry)}", expiry


def check_session(token: str, cookie: str | None, now: float | None = None) -> None:
    if not cookie:
        raise FsupError(
            "UNAUTHORIZED",
            f"the event stream needs the {COOKIE_NAME} cookie from POST /api/v1/session",
        )
    match = SESSION_PATTERN.fullmatch(cookie)
    if match is None:
        raise FsupError("UNAUTHORIZED", f"malformed {COOKIE_NAME} cookie; POST /api/v1/session")
    expiry, signature = int(match[1]), match[2]
    if not hmac.compare_digest(signature.encode(), _signature(token, expiry).encode()):
        raise FsupError("UNAUTHORIZED", "invalid session cookie")
    if expiry < (now if now is not None else time.time()):
        raise FsupError("UNAUTHORIZED", "the session has expired; POST /api/v1/session again")

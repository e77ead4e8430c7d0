"""Authentication for `/api/v1` (seed 003): a bearer token for REST, a session cookie for
the event stream and the dashboard, a loopback-only bootstrap. Pure functions (the token
file is `storage.home`'s).

The session cookie is signed, not stored: `<expiry>.<nonce>.<HMAC-SHA256(token,
"<expiry>.<nonce>")>`, so sessions survive a restart of fsup; replacing `api.token` (rotation)
ends them all, and a logged-out session is refused by its id (`session_id`), or by its
expiry once the bounded record of logged-out sessions has had to raise its floor over it
(`sessions.py`). The nonce makes two sessions opened in the same second different, so that
ending one does not end the other. A cookie is matched whole against its exact shape before
any number is read from it (`str.isdigit` accepts '²', which `int` then refuses): anything
else is a 401, never a 500.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from supervisor.core.errors import FsupError

COOKIE_NAME = "rm_session"
SESSION_TTL_S = 12 * 3600
# `<unix seconds>.<16 hex nonce>.<64 lowercase hex>`, ASCII only; 12 digits reach the year 33658.
SESSION_PATTERN = re.compile(r"([0-9]{1,12})\.([0-9a-f]{16})\.([0-9a-f]{64})")
# Methods that change nothing: no cross-site check for them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The header a dashboard request carries (any value): a cross-site page cannot send a custom
# header without a CORS preflight, which fsup never grants.
CSRF_HEADER = "X-Fsup-Request"
BOOTSTRAP_PATH = "/api/v1/auth/bootstrap"
# Answers that carry a credential (the token, a session cookie): `Cache-Control: no-store`,
# so that no cache (a shared one, or the browser's on disk) keeps one.
CREDENTIAL_ANSWERS = frozenset({BOOTSTRAP_PATH, "/api/v1/token/rotate", "/api/v1/session"})


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


def _signature(token: str, expiry: int, nonce: str) -> str:
    return hmac.new(token.encode(), f"{expiry}.{nonce}".encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> tuple[str, int]:
    """A cookie value and its expiry (unix seconds)."""
    expiry = int(now if now is not None else time.time()) + SESSION_TTL_S
    nonce = secrets.token_hex(8)
    return f"{expiry}.{nonce}.{_signature(token, expiry, nonce)}", expiry


def check_session(token: str, cookie: str | None, now: float | None = None) -> tuple[str, int]:
    """The session's id (its signature) and expiry, once the cookie is found genuine and
    unexpired; the caller refuses a revoked id."""
    if not cookie:
        raise FsupError(
            "UNAUTHORIZED",
            f"the event stream needs the {COOKIE_NAME} cookie from POST /api/v1/session",
        )
    match = SESSION_PATTERN.fullmatch(cookie)
    if match is None:
        raise FsupError("UNAUTHORIZED", f"malformed {COOKIE_NAME} cookie; POST /api/v1/session")
    expiry, nonce, signature = int(match[1]), match[2], match[3]
    if not hmac.compare_digest(signature.encode(), _signature(token, expiry, nonce).encode()):
        raise FsupError("UNAUTHORIZED", "invalid session cookie")
    if expiry < (now if now is not None else time.time()):
        raise FsupError("UNAUTHORIZED", "the session has expired; POST /api/v1/session again")
    return signature, expiry


def check_same_origin(method: str, headers: dict[str, str], host: str | None) -> None:
    """Refuse a cookie-authenticated request that changes something unless it comes from
    fsup's own pages (CSRF). SameSite=Strict already keeps the cookie off cross-site requests;
    this is the second lock, for browsers or proxies that do not honour it: the custom header
    `X-Fsup-Request` (which a cross-site page cannot send without a CORS preflight), and,
    when the browser says where the request comes from, `Sec-Fetch-Site: same-origin` and an
    `Origin` whose host is this server's `Host`."""
    if method.upper() in SAFE_METHODS:
        return
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    problem = None
    if not headers.get(CSRF_HEADER.lower()):
        problem = f"the {CSRF_HEADER} header is missing"
    elif site is not None and site != "same-origin":
        problem = f"Sec-Fetch-Site is {site[:40]!r}, not 'same-origin'"
    elif origin is not None and origin.partition("://")[2] != (host or ""):
        problem = f"Origin {origin[:100]!r} is not this server"
    if problem is not None:
        raise FsupError(
            "FORBIDDEN",
            f"cross-site request refused: {problem}; a request authenticated by the session "
            f"cookie that changes something must come from fsup's own pages (or use "
            f"Authorization: Bearer)",
            {"header": CSRF_HEADER},
        )

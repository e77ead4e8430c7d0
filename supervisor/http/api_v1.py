"""`/api/v1`: seed 003's search and operations API (auth, events; searches in `searches.py`).

REST calls carry `Authorization: Bearer <token>` or, from the dashboard, the session cookie
(with the cross-site check on anything that changes state); the event stream and the session's
own endpoints take only the cookie; opening a session and rotating the token take only the
bearer token. The bootstrap that hands out the token answers loopback peers only, judged by
the socket's address (a forwarded header is never trusted for it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Blueprint, g, make_response, request

from supervisor.core.errors import FsupError
from supervisor.core.hosts import is_loopback
from supervisor.core.safe_json import query_int, shown, whole_number
from supervisor.http import audit, sse
from supervisor.http.api_auth import (
    COOKIE_NAME,
    SESSION_TTL_S,
    check_bearer,
    check_same_origin,
    check_session,
    new_session,
)
from supervisor.http.params import choice_param
from supervisor.http.services import services
from supervisor.http.sessions import RevokedSessions
from supervisor.runtime.events import HEARTBEAT_S, EventBus, Subscription
from supervisor.runtime.logs import LEVELS, LogBook

PREFIX = "/api/v1"
PUBLIC = {f"{PREFIX}/health", f"{PREFIX}/auth/bootstrap"}
COOKIE_ONLY = {f"{PREFIX}/events", f"{PREFIX}/session/check", f"{PREFIX}/session/logout"}
BEARER_ONLY = {f"{PREFIX}/session", f"{PREFIX}/token/rotate"}


def token() -> str:
    return services().api_token


def bus() -> EventBus:
    return services().bus


def log_book() -> LogBook:
    book = services().log_book
    if book is None:
        raise FsupError("INTERNAL", "this server keeps no log book")
    return book


def revoked_sessions() -> RevokedSessions:
    svc = services()
    if svc.revoked is None:
        svc.revoked = RevokedSessions(svc.home.server / "sessions.revoked")
    return svc.revoked


def current_session() -> tuple[str, int]:
    """The request's session (id, expiry): a genuine, unexpired cookie, neither logged out
    nor below the floor of ended sessions (`sessions.py`)."""
    session_id, expiry = check_session(token(), request.cookies.get(COOKIE_NAME))
    refusal = revoked_sessions().refusal(session_id, expiry)
    if refusal is not None:
        raise FsupError("UNAUTHORIZED", refusal)
    return session_id, expiry


def credential() -> str:
    """The credential this request presents (`bearer`, `session`, or "" for none), weighed
    once per request and kept in `g`: the auth hook judges the request by it, the audit
    names it (also for a call refused before the hook runs). The cookie first where only the
    cookie is taken, the Authorization header first elsewhere."""
    if "api_credential" not in g:
        has_bearer = "Authorization" in request.headers
        has_cookie = COOKIE_NAME in request.cookies
        if request.path in COOKIE_ONLY and has_cookie:
            g.api_credential = audit.SESSION
        elif has_bearer:
            g.api_credential = audit.BEARER
        else:
            g.api_credential = audit.SESSION if has_cookie else ""
    return str(g.api_credential)


async def api_auth_hook() -> None:
    """`/api/v1`'s auth, the before-request hook of each of its Blueprints: nothing for health
    and bootstrap; the cookie alone for the event stream and the session's own endpoints; the
    bearer alone to open a session or rotate the token; either for the rest (a request with
    an Authorization header, or with no credential, is judged by the bearer), with the
    cross-site check when the cookie is what authenticates a change."""
    audit.start_clock()
    path = request.path
    if path in PUBLIC:
        return
    if path in BEARER_ONLY or (path not in COOKIE_ONLY and credential() != audit.SESSION):
        check_bearer(token(), request.headers.get("Authorization"))
    else:
        current_session()
        headers = {name.lower(): value for name, value in request.headers.items()}
        check_same_origin(request.method, headers, request.headers.get("Host"))
    audit.accepted()


def peer_host() -> str | None:
    client = request.scope.get("client")
    return client[0] if client else None


async def api_health() -> Any:
    return {"ok": True}


async def api_bootstrap() -> Any:
    """The token, to a loopback peer only: judged by the socket's address, never a header
    (a proxy in front could forge one)."""
    if not is_loopback(peer_host()):
        raise FsupError(
            "FORBIDDEN",
            "the token is only handed out to this machine (loopback)",
            {"peer": peer_host()},
        )
    return {"token": token()}


async def api_session() -> Any:
    """A session cookie (HttpOnly, SameSite=Strict, scoped to `/api/v1`) for the dashboard."""
    # The record is read before the first session of this run is opened: a floor set
    # because it could not be read ends the sessions opened before it (and, expiries
    # being whole seconds, any opened in that same second), not the later ones.
    revoked_sessions()
    value, expiry = new_session(token())
    response = await make_response({"ok": True, "expires_at": expiry})
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="Strict",
        path=PREFIX,
        secure=request.scheme == "https",
    )
    return response


async def api_events() -> Any:
    events_bus = bus()
    subscription = events_bus.open_subscription(last_event_id())
    return await sse.stream_response(_stream(events_bus, subscription))


async def api_logs() -> Any:
    level = choice_param("level", tuple(LEVELS), "info")
    limit = query_int(request.args, "limit", 200, 1, 1000)
    cursor = query_int(request.args, "cursor", 0, 0, 2**62)
    items, next_cursor = log_book().page(level, limit, cursor)
    return {"items": items, "next_cursor": next_cursor}


async def api_unknown(rest: str) -> Any:
    """An unknown `/api/v1` path gets the contract's 404, not the proxy's "formation 'v1'
    not found" (without this route, `/api/<formation_id>/...` would take it)."""
    raise FsupError("NOT_FOUND", f"no such endpoint: {request.method} {request.path}")


def blueprint() -> Blueprint:
    """`/api/v1`'s own routes: health, bootstrap, session, events, logs."""
    bp = Blueprint("api_v1", __name__)
    bp.before_request(api_auth_hook)  # audited by the app's own hooks (`hooks.py`)
    bp.get(f"{PREFIX}/health")(api_health)
    bp.get(f"{PREFIX}/auth/bootstrap")(api_bootstrap)
    bp.post(f"{PREFIX}/session")(api_session)
    bp.get(f"{PREFIX}/events")(api_events)
    bp.get(f"{PREFIX}/logs")(api_logs)
    bp.route(f"{PREFIX}/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])(
        api_unknown
    )
    return bp


def last_event_id() -> int | None:
    """The id to resume after: 1-19 ASCII digits (`isdigit` would take '²', which `int`
    refuses), or absent."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw == "":
        return None
    value = whole_number(raw)
    if value is None:
        raise FsupError(
            "INVALID_REQUEST",
            f"header 'Last-Event-ID' must be an event id (1-19 digits 0-9), not {shown(raw)}",
            {"header": "Last-Event-ID"},
        )
    return value


async def _stream(events_bus: EventBus, subscription: Subscription) -> AsyncIterator[bytes]:
    """Events as SSE, a heartbeat comment every 15 s of quiet; ends when the bus drops or
    closes this subscription. Subscribed before the response starts, so nothing published
    in between is missed."""
    try:
        yield b"retry: 2000\n\n"
        while True:
            ended = False
            event = None
            with trio.move_on_after(HEARTBEAT_S) as quiet:
                try:
                    event = await subscription.receive.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    ended = True
            if quiet.cancelled_caught:
                yield sse.HEARTBEAT
                continue
            if ended or event is None:
                return
            yield sse.frame_json(event.id, event.type, event.envelope_json)
            if event.type == "overflow":
                return
    finally:
        events_bus.close_subscription(subscription)

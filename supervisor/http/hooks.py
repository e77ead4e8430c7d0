"""The app's own request hooks: what every route relies on, checked before any Blueprint's
hook (authentication included) and before any handler.

In the order they run: what the call claims, for its audit entry (`claim`); the head's
framing, size and query (`guard`, `request_guard`); the `Host` of a browser-reachable route
(`core.hosts`, against DNS rebinding) and credential headers given once (`trust`); the
signature of a `/rpc` path no route matched (`authenticate_unrouted`). After the answer: its
audit entry and a debug line (`answered`), `no-store` on a credential (`no_store`); a call
that got no answer is audited as its context exits (`unanswered`). A WebSocket to fsup's own
routes is refused before routing (`refuse_websocket`). `install_hooks` registers them.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Response, request, websocket
from quart_trio import QuartTrio

from supervisor.core import hosts
from supervisor.core.doors import Door, door_of
from supervisor.core.errors import FsupError
from supervisor.core.hmac_auth import check_single_credentials
from supervisor.http import api_v1, audit, request_guard, rpc_auth
from supervisor.http.api_auth import BOOTSTRAP_PATH, CREDENTIAL_ANSWERS
from supervisor.http.error_handlers import loggable, websocket_refused
from supervisor.http.render import error_response
from supervisor.http.services import services

log = logging.getLogger("fsup.http")


def install_hooks(app: QuartTrio) -> None:
    """The before-request hooks run in the order registered; the after-request ones in the
    reverse order, so `answered`, registered first, runs last (after `no_store` and the
    dashboard's security headers)."""
    for before in (claim, guard, trust, authenticate_unrouted):
        app.before_request(before)
    app.after_request(answered)
    app.teardown_request(unanswered)
    app.after_request(no_store)
    app.before_websocket(refuse_websocket)


async def claim() -> None:
    """What the request's audit entry will say it claimed, decided once, before any
    check can refuse it (a refused call is audited too)."""
    door = door_of(request.path)
    if door is Door.RPC:
        audit.audit_as(*rpc_auth.claim())
    elif door is Door.API and request.method not in audit.READS:
        audit.audit_as(api_v1.credential())


async def guard() -> Any:
    """The head's framing, size and query are checked before anything else; a refused
    request's connection is closed, so no byte left in it is read as a next request."""
    try:
        request_guard.check_head()
    except FsupError as error:
        response, status = error_response(error)
        response.headers["Connection"] = "close"
        return response, status
    return None


async def trust() -> None:
    """Who may ask: a Host (and an absolute-form target's authority) that names this
    server (and, for the token's bootstrap, an Origin that does), then each credential
    header at most once (401 otherwise)."""
    door = door_of(request.path)
    if door.names_checked:
        allowed = services().config.allowed_hosts
        hosts.check_host(request.headers.getlist("Host"), allowed)
        hosts.check_target(raw_target(), allowed)
        if request.path == BOOTSTRAP_PATH:
            hosts.check_origin(request.headers.getlist("Origin"), allowed)
    if door not in (Door.PUBLIC, Door.PROXIED):
        check_single_credentials(name for name, _ in request.headers.items())


async def authenticate_unrouted() -> None:
    """A `/rpc` path that matched no route is authenticated like the others (its
    Blueprint's hook does not run for it): 401 before 404 or 405."""
    if request.routing_exception is not None and door_of(request.path) is Door.RPC:
        await rpc_auth.authenticate()


async def answered(response: Response) -> Response:
    """The audit entry, with the answer's status, for every door (a `/rpc` path that
    matched no route, a refusal before any Blueprint's hook, included); one debug line
    for a request fsup answered itself (method, path, status: never a header)."""
    audit.record(response.status_code)
    if door_of(request.path) is not Door.PROXIED:
        line = f"{request.method} {request.path[:200]}"
        log.debug("%s: %d", loggable(line), response.status_code)
    return response


async def unanswered(exc: BaseException | None) -> None:
    """The audit entry of a call that got no answer: its client went away (or timed out)
    while the change it asked for went on, so its request was cancelled before the
    after-request hooks. This runs as the request context exits, cancelled or not; it
    awaits nothing, so a cancelled scope cannot stop it. A call already recorded (by
    `answered`) is not recorded again."""
    audit.record(audit.CLIENT_CLOSED if audit.is_cancellation(exc) else 500)


async def no_store(response: Response) -> Response:
    """A token or a session cookie is never kept by a cache (a shared one, or the
    browser's on disk)."""
    if request.path in CREDENTIAL_ANSWERS:
        response.headers["Cache-Control"] = "no-store"
    return response


async def refuse_websocket() -> None:
    """fsup's own routes take no WebSocket: a clear 400, before routing. The proxy's are
    left to its routes (a WebSocket to an HTTP route is refused by `http_error`)."""
    path = websocket.path
    if door_of(path) is not Door.PROXIED:
        raise websocket_refused(path)


def raw_target() -> str:
    """The request target as sent, up to its query: `/path` (origin form) or
    `http://host:port/path` (absolute form, whose host Quart drops from `request.path`)."""
    raw = request.scope.get("raw_path") or b"/"
    return bytes(raw).decode("latin-1")

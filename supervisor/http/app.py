"""The Quart-Trio application: public endpoints, HMAC on `/rpc/*`, the contract's errors.

Handlers hold no state of their own and never touch a process: they validate the request,
send a message to an actor, and render the answer (JSON, or SSE for progress streams).

Before any Blueprint's hook or handler, the app's own hooks check what every route relies
on: the head's framing and size (`request_guard`), the `Host` of a browser-reachable route
(`core.hosts`, against DNS rebinding), and credential headers given once. A WebSocket gets
a clear 400 from fsup's own routes, and no error handler reads `request` where a WebSocket
has none.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Response, has_request_context, has_websocket_context, jsonify, request, websocket
from quart.wrappers import BaseRequestWebsocket
from quart_trio import QuartTrio
from werkzeug.exceptions import BadHost, HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.routing import MapAdapter
from werkzeug.routing.exceptions import WebsocketMismatch

from supervisor.core import hosts
from supervisor.core.doors import Door, door_of
from supervisor.core.errors import FsupError
from supervisor.core.hmac_auth import check_single_credentials
from supervisor.http import (
    api_v1,
    audit,
    dashboard,
    faults,
    fleet_api,
    openapi,
    operations_api,
    proxy,
    request_guard,
    rpc,
    rpc_auth,
    searches,
    server_api,
    session_api,
)
from supervisor.http.api_auth import BOOTSTRAP_PATH, CREDENTIAL_ANSWERS
from supervisor.http.render import error_response
from supervisor.http.services import EXTENSION, HttpServices

log = logging.getLogger("fsup.http")

# The longest a request body may take to arrive (100 MB at under 1 MB/s is refused with 408).
BODY_TIMEOUT_S = 120


# The router's server name for a request whose Host werkzeug cannot encode (`FsupApp`).
UNROUTABLE_HOST = "host.invalid"
WEBSOCKET_REFUSED = (
    "fsup offers no WebSocket at {path}: its live updates are Server-Sent Events "
    "(GET /api/v1/events, Accept: text/event-stream); send this request without Upgrade"
)


class FsupApp(QuartTrio):
    """Quart-Trio, with routing that survives any `Host`."""

    def create_url_adapter(self, request: BaseRequestWebsocket | None) -> MapAdapter | None:
        """Werkzeug binds the router to the request's Host, IDNA-encoded; a Host it cannot
        encode (an empty label, `a..b`; a label over 63 characters) raised `BadHost` while
        the request context was made, before any handler or hook: a 500 with a traceback,
        on every route, `/health` included. Such a request is routed without the Host
        (fsup builds no absolute URL from it); the Host check refuses it on fsup's own
        named routes, and the proxy passes it on as it came."""
        try:
            return super().create_url_adapter(request)
        except BadHost:
            if request is None:
                raise
            return self.url_map.bind(
                UNROUTABLE_HOST,
                request.root_path,
                None,
                request.scheme,
                request.method,
                request.path,
                request.query_string.decode("latin-1"),
            )


def create_app(services: HttpServices) -> QuartTrio:
    app = FsupApp("fsup")
    # `//` in a path is not redirected (a 308 to an HTML page is not the contract's answer):
    # fsup's routes then answer 404, the proxy passes it on to the formation as it came.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = services.config.max_body_bytes
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT_S
    app.extensions[EXTENSION] = services

    @app.get("/health")
    async def health() -> Any:
        return {"status": "healthy"}

    @app.get("/ping")
    async def ping() -> Any:
        return {"message": "pong"}

    _install_guards(app, services)
    _install_error_handlers(app, services)
    for blueprint in (
        openapi.blueprint(),
        rpc.blueprint(),
        faults.blueprint(),
        searches.blueprint(),
        operations_api.blueprint(),
        fleet_api.blueprint(),
        server_api.blueprint(),
        session_api.blueprint(),
        dashboard.blueprint(),
        api_v1.blueprint(),
        proxy.blueprint(),
    ):
        if blueprint is not None:
            app.register_blueprint(blueprint)
    return app


def _install_guards(app: QuartTrio, services: HttpServices) -> None:
    """The app's own before- and after-request hooks, in the order they run: they come
    before every Blueprint's (authentication included) and before any handler."""

    @app.before_request
    async def claim() -> None:
        """What the request's audit entry will say it claimed, decided once, before any
        check can refuse it (a refused call is audited too)."""
        door = door_of(request.path)
        if door is Door.RPC:
            audit.audit_as(*rpc_auth.claim())
        elif door is Door.API and request.method not in audit.READS:
            audit.audit_as(api_v1.credential())

    @app.before_request
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

    @app.before_request
    async def trust() -> None:
        """Who may ask: a Host (and an absolute-form target's authority) that names this
        server (and, for the token's bootstrap, an Origin that does), then each credential
        header at most once (401 otherwise)."""
        door = door_of(request.path)
        if door.names_checked:
            allowed = services.config.allowed_hosts
            hosts.check_host(request.headers.getlist("Host"), allowed)
            hosts.check_target(_raw_target(), allowed)
            if request.path == BOOTSTRAP_PATH:
                hosts.check_origin(request.headers.getlist("Origin"), allowed)
        if door not in (Door.PUBLIC, Door.PROXIED):
            check_single_credentials(name for name, _ in request.headers.items())

    @app.before_request
    async def authenticate_unrouted() -> None:
        """A `/rpc` path that matched no route is authenticated like the others (its
        Blueprint's hook does not run for it): 401 before 404 or 405."""
        if request.routing_exception is not None and door_of(request.path) is Door.RPC:
            await rpc_auth.authenticate()

    @app.after_request
    async def answered(response: Response) -> Response:
        """The audit entry, with the answer's status, for every door (a `/rpc` path that
        matched no route, a refusal before any Blueprint's hook, included); one debug line
        for a request fsup answered itself (method, path, status: never a header)."""
        audit.record(response.status_code)
        if door_of(request.path) is not Door.PROXIED:
            line = f"{request.method} {request.path[:200]}"
            log.debug("%s: %d", loggable(line), response.status_code)
        return response

    @app.teardown_request
    async def unanswered(exc: BaseException | None) -> None:
        """The audit entry of a call that got no answer: its client went away (or timed out)
        while the change it asked for went on, so its request was cancelled before the
        after-request hooks. This runs as the request context exits, cancelled or not; it
        awaits nothing, so a cancelled scope cannot stop it. A call already recorded (by
        `answered`) is not recorded again."""
        audit.record(audit.CLIENT_CLOSED if audit.is_cancellation(exc) else 500)

    @app.after_request
    async def no_store(response: Response) -> Response:
        """A token or a session cookie is never kept by a cache (a shared one, or the
        browser's on disk)."""
        if request.path in CREDENTIAL_ANSWERS:
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.before_websocket
    async def refuse_websocket() -> None:
        """fsup's own routes take no WebSocket: a clear 400, before routing. The proxy's are
        left to its routes (a WebSocket to an HTTP route is refused by `http_error`)."""
        path = websocket.path
        if door_of(path) is not Door.PROXIED:
            raise _websocket_refused(path)


def _raw_target() -> str:
    """The request target as sent, up to its query: `/path` (origin form) or
    `http://host:port/path` (absolute form, whose host Quart drops from `request.path`)."""
    raw = request.scope.get("raw_path") or b"/"
    return bytes(raw).decode("latin-1")


def _websocket_refused(path: str) -> FsupError:
    return FsupError(
        "INVALID_REQUEST",
        WEBSOCKET_REFUSED.format(path=path[:200]),
        {"upgrade": "websocket", "path": path[:200]},
    )


def loggable(text: str) -> str:
    """A client's text as one log line: a decoded path may hold a newline (`%0a`) that would
    forge a line of its own; control and non-ASCII characters are written as escapes."""
    return text.encode("unicode_escape").decode("ascii")


def _request_line() -> str:
    """The request an error belongs to, for a message or the log. A WebSocket request has
    no `request` (reading it raises), only a `websocket`."""
    if has_request_context():
        return f"{request.method} {request.path[:200]}"
    if has_websocket_context():
        return f"WebSocket {websocket.path[:200]}"
    return "(outside a request)"


def _install_error_handlers(app: QuartTrio, services: HttpServices) -> None:
    """Every failure answers in the contract's shape, for a request or a WebSocket alike;
    none of them reads `request` where there may be none (a traceback per request is a way
    to flood the log)."""

    @app.errorhandler(FsupError)
    async def fsup_error(error: FsupError) -> Any:
        if error.status >= 500:
            log.error("%s: %s %s", loggable(_request_line()), error.code, error.message)
        return error_response(error)

    @app.errorhandler(RequestEntityTooLarge)
    async def too_large(_: Exception) -> Any:
        limit = services.config.max_body_bytes
        return error_response(
            FsupError(
                "PAYLOAD_TOO_LARGE",
                f"the request body is larger than the limit of {limit} bytes",
                {"limit_bytes": limit},
            )
        )

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Any:
        if isinstance(error, WebsocketMismatch) and has_websocket_context():
            return error_response(_websocket_refused(websocket.path))
        code = "NOT_FOUND" if error.code == 404 else "INVALID_REQUEST"
        body = FsupError(code, f"{error.name}: {_request_line()}").to_json()
        response = jsonify(body)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response, error.code or 400

    @app.errorhandler(Exception)
    async def internal(error: Exception) -> Any:
        log.exception("unhandled error in %s", loggable(_request_line()))
        return error_response(FsupError("INTERNAL", "internal error; see the server log"))

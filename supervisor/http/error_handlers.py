"""The app's error handlers: every failure answers in the contract's shape.

They serve a request or a WebSocket alike, and none of them reads `request` where there may
be none (a traceback per request is a way to flood the log). A client's text reaches the
log only through `loggable`.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import has_request_context, has_websocket_context, jsonify, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.routing.exceptions import WebsocketMismatch

from supervisor.core.errors import FsupError
from supervisor.http.render import error_response
from supervisor.http.services import services

log = logging.getLogger("fsup.http")

WEBSOCKET_REFUSED = (
    "fsup offers no WebSocket at {path}: its live updates are Server-Sent Events "
    "(GET /api/v1/events, Accept: text/event-stream); send this request without Upgrade"
)


def install_error_handlers(app: QuartTrio) -> None:
    """From the most specific to the catch-all (Quart picks by the exception's class)."""
    app.register_error_handler(FsupError, fsup_error)
    app.register_error_handler(RequestEntityTooLarge, too_large)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, internal)


async def fsup_error(error: FsupError) -> Any:
    """fsup's own refusals and failures; a server-side one (5xx) is logged."""
    if error.status >= 500:
        log.error("%s: %s %s", loggable(request_line()), error.code, error.message)
    return error_response(error)


async def too_large(_: Exception) -> Any:
    """A body over `max_body_bytes` (Quart's `MAX_CONTENT_LENGTH`), with the limit."""
    limit = services().config.max_body_bytes
    return error_response(
        FsupError(
            "PAYLOAD_TOO_LARGE",
            f"the request body is larger than the limit of {limit} bytes",
            {"limit_bytes": limit},
        )
    )


async def http_error(error: HTTPException) -> Any:
    """Werkzeug's refusals (no route, wrong method, a WebSocket to an HTTP route) in the
    contract's shape, with `Allow` on a 405."""
    if isinstance(error, WebsocketMismatch) and has_websocket_context():
        return error_response(websocket_refused(websocket.path))
    code = "NOT_FOUND" if error.code == 404 else "INVALID_REQUEST"
    body = FsupError(code, f"{error.name}: {request_line()}").to_json()
    response = jsonify(body)
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
    return response, error.code or 400


async def internal(error: Exception) -> Any:
    """A bug: its traceback goes to the log, never to the client."""
    log.exception("unhandled error in %s", loggable(request_line()))
    return error_response(FsupError("INTERNAL", "internal error; see the server log"))


def websocket_refused(path: str) -> FsupError:
    return FsupError(
        "INVALID_REQUEST",
        WEBSOCKET_REFUSED.format(path=path[:200]),
        {"upgrade": "websocket", "path": path[:200]},
    )


def loggable(text: str) -> str:
    """A client's text as one log line: a decoded path may hold a newline (`%0a`) that would
    forge a line of its own; control and non-ASCII characters are written as escapes."""
    return text.encode("unicode_escape").decode("ascii")


def request_line() -> str:
    """The request an error belongs to, for a message or the log. A WebSocket request has
    no `request` (reading it raises), only a `websocket`."""
    if has_request_context():
        return f"{request.method} {request.path[:200]}"
    if has_websocket_context():
        return f"WebSocket {websocket.path[:200]}"
    return "(outside a request)"

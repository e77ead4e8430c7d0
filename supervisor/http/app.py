"""The Quart-Trio application: public endpoints, HMAC on `/rpc/*`, the contract's errors.

Handlers hold no state of their own and never touch a process: they validate the request,
send a message to an actor, and render the answer (JSON, or SSE for progress streams).
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Response, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from supervisor.core.errors import FsupError
from supervisor.http import (
    api_v1,
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
from supervisor.http.render import error_response
from supervisor.http.services import EXTENSION, HttpServices

log = logging.getLogger("fsup.http")

# The longest a request body may take to arrive (100 MB at under 1 MB/s is refused with 408).
BODY_TIMEOUT_S = 120


def create_app(services: HttpServices) -> QuartTrio:
    app = QuartTrio("fsup")
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
    async def authenticate_unrouted() -> None:
        """A `/rpc` path that matched no route is authenticated like the others (its
        Blueprint's hook does not run for it): 401 before 404 or 405."""
        if request.routing_exception is not None and request_guard.is_rpc():
            await rpc_auth.authenticate()

    @app.after_request
    async def audit_unrouted(response: Response) -> Response:
        if request.routing_exception is not None and request_guard.is_rpc():
            response = await rpc_auth.audit(response)
        return response

    @app.errorhandler(FsupError)
    async def fsup_error(error: FsupError) -> Any:
        if error.status >= 500:
            log.error("%s %s: %s %s", request.method, request.path, error.code, error.message)
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
        code = "NOT_FOUND" if error.code == 404 else "INVALID_REQUEST"
        body = FsupError(code, f"{error.name}: {request.method} {request.path}").to_json()
        response = jsonify(body)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response, error.code or 400

    @app.errorhandler(Exception)
    async def internal(error: Exception) -> Any:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(FsupError("INTERNAL", "internal error; see the server log"))

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

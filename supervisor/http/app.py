"""The Quart-Trio application: public endpoints, HMAC on `/rpc/*`, the contract's errors.

Handlers hold no state of their own and never touch a process: they validate the request,
send a message to an actor, and render the answer (JSON, or SSE for progress streams).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from quart import Response, g, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from supervisor.core.errors import FsupError
from supervisor.core.hmac_auth import (
    Credentials,
    check_head,
    check_signature,
    claimed_key_id,
    scheme_of,
)
from supervisor.http import (
    api_v1,
    faults,
    openapi,
    operations_api,
    proxy,
    request_guard,
    rpc,
    searches,
)
from supervisor.http.render import error_response
from supervisor.runtime.operations import Services

log = logging.getLogger("fsup.http")

# The longest a request body may take to arrive (100 MB at under 1 MB/s is refused with 408).
BODY_TIMEOUT_S = 120


def create_app(
    services: Services,
    credentials: Credentials,
    server_id: str,
    proxy_client: httpx.AsyncClient,
    api_token: str,
) -> QuartTrio:
    app = QuartTrio("fsup")
    # `//` in a path is not redirected (a 308 to an HTML page is not the contract's answer):
    # fsup's routes then answer 404, the proxy passes it on to the formation as it came.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = services.config.max_body_bytes
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT_S
    app.extensions["fsup"] = services
    app.extensions["fsup.server_id"] = server_id
    app.extensions["fsup.routes"] = services.routes
    app.extensions["fsup.proxy_client"] = proxy_client
    app.extensions["fsup.api_token"] = api_token
    app.extensions["fsup.bus"] = services.bus
    schemes = services.config.accepted_schemes()

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
    async def authenticate() -> Any:
        """Headers first (an unsigned or stale request is refused before a body byte is
        read), then the body under the size bound and read deadline, then its signature."""
        if not request_guard.is_rpc():
            return None
        g.started = time.monotonic()
        path = request.scope.get("raw_path") or request.path.encode()
        headers = request.headers
        pending = check_head(
            credentials,
            headers,  # type: ignore[arg-type]
            request.method,
            path,
            schemes,
        )
        if pending is None:
            return None  # MUXI-HMAC: the body is not signed, the handler reads it when needed
        body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
        query = request.scope.get("query_string") or b""
        if query:
            path += b"?" + query
        check_signature(credentials, pending, request.method, path, body)
        return None

    @app.after_request
    async def audit(response: Response) -> Response:
        """Every /rpc call, refused ones included (a stream: until its headers)."""
        if request_guard.is_rpc() and "started" in g:
            path = request.path + (
                f"?{request.query_string.decode('latin-1')}" if request.query_string else ""
            )
            headers = request.headers
            services.store.record_audit(
                claimed_key_id(headers)[:64],  # type: ignore[arg-type]
                request.method,
                path[:1024],
                response.status_code,
                round((time.monotonic() - g.started) * 1000, 2),
                request.remote_addr or "",
                scheme_of(headers) or "",  # type: ignore[arg-type]
            )
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

    openapi.register(app)
    rpc.register(app)
    faults.register(app)
    searches.register(app)
    operations_api.register(app)
    api_v1.register(app)
    proxy.register(app)
    return app

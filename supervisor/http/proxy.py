"""`/api/{id}/*`: the reverse proxy to each formation's active process.

Bodies stream both ways (a large upload or download is never held whole in memory). The
backend's in-flight count is taken before the upstream request and given back when the
response body is closed, which is what lets an update drain the old process before stopping
it. The route is read from the routing table, not asked of an actor (see `routing`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio
from quart import Response, current_app, request
from quart_trio import QuartTrio

from ..errors import FsupError
from ..routing import Backend, RouteTable
from .render import error_response

# Hop-by-hop headers (RFC 9110 7.6.1) are for one connection and never forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
     "trailer", "transfer-encoding", "upgrade", "proxy-connection"}
)
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CLOSE_BOUND_S = 2.0


def open_proxy_client() -> httpx.AsyncClient:
    """The proxy's upstream client: loopback only (no proxies from the environment), pooled
    connections, no overall read deadline (a formation may stream for long)."""
    return httpx.AsyncClient(
        trust_env=False,
        timeout=httpx.Timeout(connect=5.0, read=None, write=60.0, pool=10.0),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
        follow_redirects=False,
    )


class ProxiedBody:
    """The upstream response body, streamed; `aclose` (always called by Quart) closes the
    upstream response and releases the backend exactly once."""

    def __init__(self, upstream: httpx.Response, backend: Backend) -> None:
        self._upstream = upstream
        self._chunks = upstream.aiter_raw()
        self._backend: Backend | None = backend

    def __aiter__(self) -> ProxiedBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except httpx.HTTPError:
            # The formation died mid-response: end the body; the client sees a short read.
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_BOUND_S):
            await self._upstream.aclose()
        if self._backend is not None:
            self._backend.release()
            self._backend = None


def forwarded_headers(formation_id: str) -> list[tuple[str, str]]:
    headers = [
        (name, value) for name, value in request.headers.items()
        if name.lower() not in HOP_BY_HOP and name.lower() not in ("host", "x-formation-id")
    ]
    client = request.remote_addr or ""
    prior = request.headers.get("X-Forwarded-For")
    headers = [(n, v) for n, v in headers if not n.lower().startswith("x-forwarded-")]
    headers += [
        ("X-Forwarded-For", f"{prior}, {client}" if prior else client),
        ("X-Forwarded-Proto", request.scheme),
        ("X-Forwarded-Host", request.headers.get("Host", "")),
        ("X-Formation-ID", formation_id),
    ]
    return headers


async def _stream_body() -> AsyncIterator[bytes]:
    async for chunk in request.body:
        yield chunk


def request_body() -> AsyncIterator[bytes] | bytes:
    """The client's body, streamed, or none at all when it sent none. (An async iterator
    would make httpx send an empty chunked body, which many backends misread.) With the
    client's Content-Length forwarded, httpx sends the stream with that length."""
    has_length = request.headers.get("Content-Length") not in (None, "0")
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return _stream_body() if has_length or chunked else b""


def upstream_target(formation_id: str, port: int) -> str:
    """The raw path after `/api/{id}` and the raw query, passed on exactly as sent."""
    raw = (request.scope.get("raw_path") or request.path.encode()).decode("latin-1")
    prefix = f"/api/{formation_id}"
    rest = raw[len(prefix):] if raw.startswith(prefix) else "/"
    query = (request.scope.get("query_string") or b"").decode("latin-1")
    return f"http://127.0.0.1:{port}{rest or '/'}" + (f"?{query}" if query else "")


def register(app: QuartTrio) -> None:
    async def proxy(formation_id: str, rest: str = "") -> Any:
        routes: RouteTable = current_app.extensions["fsup.routes"]
        client: httpx.AsyncClient = current_app.extensions["fsup.proxy_client"]
        route = routes.get(formation_id)
        if route is None:
            return error_response(FsupError(
                "FORMATION_NOT_FOUND", f"formation '{formation_id}' not found",
                {"formation_id": formation_id},
            ))
        backend = route.backend
        if backend is None:
            return error_response(FsupError(
                "FORMATION_NOT_RUNNING",
                f"formation '{formation_id}' is not running; start it with "
                f"POST /rpc/formations/{formation_id}/start",
                {"formation_id": formation_id},
                status=503,
            ))
        backend.acquire()  # no checkpoint since the route was read: see routing.py
        try:
            outgoing = client.build_request(
                request.method,
                upstream_target(formation_id, backend.port),
                headers=forwarded_headers(formation_id),
                content=request_body(),
            )
            upstream = await client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            backend.release()
            return error_response(FsupError(
                "BAD_GATEWAY",
                f"formation '{formation_id}' did not answer: {type(exc).__name__}",
                {"formation_id": formation_id, "port": backend.port},
            ))
        except BaseException:
            backend.release()
            raise
        headers = [(n, v) for n, v in upstream.headers.multi_items() if n.lower() not in HOP_BY_HOP]
        response = Response(ProxiedBody(upstream, backend), status=upstream.status_code)
        response.headers.clear()
        for name, value in headers:
            response.headers.add(name, value)
        response.timeout = None
        return response

    app.add_url_rule("/api/<formation_id>", "proxy_root", proxy, methods=METHODS)
    app.add_url_rule("/api/<formation_id>/", "proxy_slash", proxy, methods=METHODS)
    app.add_url_rule("/api/<formation_id>/<path:rest>", "proxy", proxy, methods=METHODS)

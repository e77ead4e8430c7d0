"""`/api/{id}/*`: the reverse proxy to each formation's active process.

Bodies stream both ways (a large upload or download is never held whole in memory). The
backend's in-flight count is taken before the upstream request and given back when the
response body is closed, which is what lets an update drain the old process before stopping
it. The route is read from the routing table, not asked of an actor (see `routing`).
Upstream connections are pooled and kept alive (`upstream`).

The backend gets the headers the client sent (the raw ones of the ASGI scope, never the
`Remote-Addr` entry Quart adds to its own view of them), less the hop-by-hop ones, plus the
`X-Forwarded-*` set and `X-Formation-ID`. An answer the formation cuts short (it dies inside a
chunk, or closes before its `Content-Length`) is cut short for the client too: its connection
is closed without the answer's end, so no client takes a shorter body for a whole one. An
answer whose framing contradicts itself is a 502. A WebSocket upgrade is refused with a 400:
the proxy passes on HTTP only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

import trio
from quart import Blueprint, Response, request, websocket
from quart.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter, PathConverter

from supervisor.core.errors import FsupError
from supervisor.http import audit
from supervisor.http.proxy_hold import (
    RETRY_BODY_LIMIT,
    RETRYABLE,
    find_route,
    hold_reason,
    retryable,
    wait_for_backend,
)
from supervisor.http.proxy_target import (
    REPLACED_IN_RESPONSE,
    ProxyTarget,
    connection_tokens,
    forwardable,
    parse_target,
    upstream_path,
)
from supervisor.http.render import error_response
from supervisor.http.services import HttpServices, services
from supervisor.http.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from supervisor.runtime.metrics import FormationTally
from supervisor.runtime.routing import DEFAULT_HOLD_S, Backend, Route, RouteTable

log = logging.getLogger("fsup.http.proxy")

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CLOSE_BOUND_S = 2.0
BODY_IDLE_S = 30.0
# At most this many connection attempts per proxied request (see `retry`).
MAX_ATTEMPTS = 3


def open_proxy_client() -> UpstreamPool:
    """The proxy's upstream client: loopback only, pooled keep-alive connections, no overall
    read deadline (a formation may stream for long)."""
    return UpstreamPool()


@dataclass
class Meter:
    """One proxied request in its formation's tally (`/metrics`): in flight from when its
    route is found until its answer ends (the last byte of a streamed body, or the handler's
    return), counted once with its status and duration."""

    tally: FormationTally
    method: str
    started: float
    streaming: bool = False  # a `ProxiedBody` ends it
    ended: bool = False

    def __post_init__(self) -> None:
        self.tally.in_flight += 1

    def end(self, status: int) -> None:
        if not self.ended:
            self.ended = True
            self.tally.answered(self.method, status, trio.current_time() - self.started)


class ProxiedBody:
    """The upstream response body, streamed; `aclose` (always called by Quart) closes the
    upstream response, releases the backend and ends the request's meter exactly once."""

    def __init__(
        self, upstream: UpstreamResponse, backend: Backend, formation_id: str, meter: Meter
    ) -> None:
        self._upstream = upstream
        self._chunks = upstream.aiter_raw()
        self._backend: Backend | None = backend
        self._formation_id = formation_id
        self._meter = meter
        meter.streaming = True

    def __aiter__(self) -> ProxiedBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except UpstreamError as exc:
            self._meter.tally.upstream_error(exc.kind)
            log.warning(
                "%s: the answer was cut short by the formation (%s); the client's connection "
                "is closed without the answer's end",
                self._formation_id,
                exc,
            )
        await abort_response()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_BOUND_S):
            await self._upstream.aclose()
        if self._backend is not None:
            self._backend.release()
            self._backend = None
        self._meter.end(self._upstream.status_code)


async def abort_response() -> NoReturn:
    """End the answer being sent without its end: the client's connection closes with the
    body short of its length, or with no last chunk, which every client reports as an error.
    ASGI has no way to say this but to leave the app without finishing the body; leaving by an
    exception makes Hypercorn log a traceback, so this cancels the request's own task group
    (quart-trio's, the parent of the task sending the body), which ends the app quietly, and
    Hypercorn then closes a connection whose answer is unfinished."""
    nursery = trio.lowlevel.current_task().parent_nursery
    assert nursery is not None
    nursery.cancel_scope.cancel(reason="the proxied answer was cut short")
    await trio.lowlevel.checkpoint()
    raise AssertionError("the request's task group was not cancelled")  # pragma: no cover


def forwarded_headers(formation_id: str) -> list[tuple[bytes, bytes]]:
    """The headers the client sent (as sent: the ASGI scope's), less hop-by-hop ones, `Host`
    and the `X-Forwarded-*` set, to which fsup's own `X-Forwarded-*` and `X-Formation-ID`
    are added."""
    sent: list[tuple[bytes, bytes]] = list(request.scope.get("headers") or [])
    listed = connection_tokens([v.decode("latin-1") for n, v in sent if n.lower() == b"connection"])
    headers = [
        (name, value)
        for name, value in sent
        if forwardable(name.decode("latin-1"), listed)
        and name.lower() not in (b"host", b"x-formation-id")
        and not name.lower().startswith(b"x-forwarded-")
    ]
    client = (request.scope.get("client") or ("",))[0].encode("latin-1")
    prior = b", ".join(v for n, v in sent if n.lower() == b"x-forwarded-for")
    host = next((v for n, v in sent if n.lower() == b"host"), b"")
    headers += [
        (b"X-Forwarded-For", prior + b", " + client if prior else client),
        (b"X-Forwarded-Proto", request.scheme.encode("latin-1")),
        (b"X-Forwarded-Host", host),
        (b"X-Formation-ID", formation_id.encode("latin-1")),
    ]
    return headers


def response_headers(upstream: UpstreamResponse) -> list[tuple[str, str]]:
    """The formation's answer headers, less hop-by-hop ones and those fsup sets itself."""
    decoded = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in upstream.headers]
    listed = connection_tokens([v for n, v in decoded if n.lower() == "connection"])
    return [
        (n, v)
        for n, v in decoded
        if forwardable(n, listed) and n.lower() not in REPLACED_IN_RESPONSE
    ]


async def _stream_body() -> AsyncIterator[bytes]:
    """The client's body as it arrives; a client that sends nothing for `BODY_IDLE_S` gets a
    408 instead of holding the formation's in-flight count (and an update's drain) forever."""
    chunks = request.body.__aiter__()
    while True:
        with trio.move_on_after(BODY_IDLE_S) as idle:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
        if idle.cancelled_caught:
            raise FsupError(
                "INVALID_REQUEST", f"the request body stalled for {BODY_IDLE_S:g}s", status=408
            )
        yield chunk


def request_body() -> AsyncIterator[bytes] | bytes:
    """The client's body, streamed, or none at all when it sent none (an empty chunked body
    is misread by many backends). With the client's Content-Length forwarded, the stream is
    sent with that length; without one, chunked."""
    has_length = request.headers.get("Content-Length") not in (None, "0")
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return _stream_body() if has_length or chunked else b""


def declared_size() -> int:
    length = request.headers.get("Content-Length") or "0"
    return int(length) if length.isascii() and length.isdigit() else 0


async def buffered_body(route: Route) -> bytes | None:
    """The body in hand when the request may be sent twice (idempotent, at most
    `RETRY_BODY_LIMIT` bytes declared); None when it must stream (and cannot be retried)."""
    if request.method not in route.idempotent:
        return None
    body = request_body()
    if isinstance(body, bytes):
        return body
    if (
        "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        or declared_size() > RETRY_BODY_LIMIT
    ):
        return None
    return b"".join([chunk async for chunk in body])


def not_found(target: ProxyTarget) -> Any:
    formation_id = target.formation_id
    return error_response(
        FsupError(
            "FORMATION_NOT_FOUND",
            f"formation '{formation_id}' not found",
            {"formation_id": formation_id},
        )
    )


def not_running(formation_id: str) -> Any:
    """503 at once: the formation is not running nor coming back."""
    return error_response(
        FsupError(
            "FORMATION_NOT_RUNNING",
            f"formation '{formation_id}' is not running; start it with "
            f"POST /rpc/formations/{formation_id}/start",
            {"formation_id": formation_id},
            status=503,
        )
    )


def not_back(routes: RouteTable, formation_id: str, route: Route | None) -> Any:
    """503 for a held request whose bound passed: why the formation is not back, and a
    `Retry-After` of the time left when fsup knows it."""
    why = hold_reason(routes, route, trio.current_time())
    response, status = error_response(
        FsupError(
            "FORMATION_NOT_RUNNING",
            f"formation '{formation_id}' did not come back within the hold bound: {why.message}",
            {"formation_id": formation_id, **why.details()},
            status=503,
        )
    )
    if why.retry_after_s is not None:
        response.headers["Retry-After"] = str(why.retry_after_s)
    return response, status


def bad_gateway(formation_id: str, backend: Backend, exc: Exception) -> Any:
    return error_response(
        FsupError(
            "BAD_GATEWAY",
            f"formation '{formation_id}' did not answer properly: {type(exc).__name__}: {exc}",
            {"formation_id": formation_id, "port": backend.port},
        )
    )


async def send_upstream(
    client: UpstreamPool,
    backend: Backend,
    target: ProxyTarget,
    meter: Meter,
    body: bytes | None,
    whole: bool = False,
) -> Response:
    """One attempt, counted on `backend` (the caller acquired it; released here on failure).
    `whole`: a small answer (a Content-Length up to `RETRY_BODY_LIMIT`) is read whole before
    anything goes to the client, so that a process dying between its head and its body still
    leaves the request retryable; anything else streams. A failure is counted by its kind."""
    formation_id = target.formation_id
    try:
        upstream = await client.send(
            request.method,
            backend.port,
            upstream_path(target),
            forwarded_headers(formation_id),
            request_body() if body is None else body,
        )
        if not (whole and _small(upstream)):
            body_ = ProxiedBody(upstream, backend, formation_id, meter)
            return proxied_response(upstream, body_)
        try:
            content = b"".join([chunk async for chunk in upstream.aiter_raw()])
        finally:
            await upstream.aclose()
    except BaseException as exc:
        if isinstance(exc, UpstreamError):
            meter.tally.upstream_error(exc.kind)
        backend.release()
        raise
    backend.release()
    return proxied_response(upstream, content)


def _small(upstream: UpstreamResponse) -> bool:
    length = upstream.header(b"content-length") or b""
    return length.isdigit() and int(length) <= RETRY_BODY_LIMIT


def proxied_response(upstream: UpstreamResponse, body: ProxiedBody | bytes) -> Response:
    headers = response_headers(upstream)
    response = Response(body, status=upstream.status_code)
    response.headers.clear()
    for name, value in headers:
        response.headers.add(name, value)
    response.timeout = None
    return response


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its actor, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


async def proxy(formation_id: str, rest: str = "") -> Any:
    """The route's `formation_id` is werkzeug's decoding of the path; the target parsed
    from the raw bytes is the one that counts (see proxy_target)."""
    svc = services()
    routes, gate = svc.routes, svc.hold_gate
    target = parse_target(
        request.scope.get("raw_path") or request.path.encode(),
        request.scope.get("query_string") or b"",
    )
    formation_id = target.formation_id
    started = trio.current_time()
    route = await find_route(routes, formation_id, gate, declared_size(), DEFAULT_HOLD_S)
    if route is None:
        return not_back(routes, formation_id, None) if routes.restoring else not_found(target)
    meter = Meter(svc.metrics.formation(formation_id), request.method, started)
    try:
        answer = await to_route(svc, route, target, meter)
    except BaseException as exc:
        meter.end(failure_status(exc))
        raise
    if not meter.streaming:
        meter.end(answer[1] if isinstance(answer, tuple) else answer.status_code)
    return answer


def failure_status(exc: BaseException) -> int:
    """The status a request that raised is counted with: its error's (a stalled body's 408),
    499 when its client went away (nginx's "client closed request"), else 500."""
    if isinstance(exc, FsupError):
        return exc.status
    return audit.CLIENT_CLOSED if audit.is_cancellation(exc) else 500


async def to_route(svc: HttpServices, route: Route, target: ProxyTarget, meter: Meter) -> Any:
    """The request, for a formation whose route exists: sent to its backend, waiting for
    one within the hold bound if the formation is coming back; 503 otherwise."""
    routes, formation_id = svc.routes, target.formation_id
    if route.backend is None and not route.coming_back and not routes.restoring:
        return not_running(formation_id)
    body = await buffered_body(route)
    backend = await wait_for_backend(
        routes, route, svc.hold_gate, declared_size(), started=meter.started, tally=meter.tally
    )
    if backend is None:
        if route.coming_back or routes.restoring:
            return not_back(routes, formation_id, route)
        return not_running(formation_id)
    backend.acquire()  # no checkpoint since the route was read: see routing.py
    return await forward(svc, route, target, body, backend, meter)


async def forward(
    svc: HttpServices,
    route: Route,
    target: ProxyTarget,
    body: bytes | None,
    backend: Backend,
    meter: Meter,
) -> Any:
    """Send the request to `backend` (acquired by the caller), and again (`retry`) where a
    failure left no byte of the answer sent and the request may be sent twice."""
    formation_id = target.formation_id
    again = retryable(request.method, route, body)
    try:
        return await send_upstream(svc.proxy_client, backend, target, meter, body, again)
    except RETRYABLE as exc:
        if not again:
            return bad_gateway(formation_id, backend, exc)
        return await retry(svc, route, target, body, backend, exc, meter)
    except UpstreamError as exc:
        return bad_gateway(formation_id, backend, exc)


async def retry(
    svc: HttpServices,
    route: Route,
    target: ProxyTarget,
    body: bytes | None,
    backend: Backend,
    error: Exception,
    meter: Meter,
) -> Any:
    """Send again what failed before any byte of the answer reached the client: at once
    to what the route serves if the process that failed still runs (a connection reset
    by a live process), else to the next backend, waiting within the hold bound (its
    actor withdraws the dead one and starts another). Each attempt sent again is counted."""
    routes, gate, client = svc.routes, svc.hold_gate, svc.proxy_client
    route.figures.retried += 1
    for _ in range(MAX_ATTEMPTS - 1):
        failed = None if process_alive(backend.pid) else backend
        nxt = await wait_for_backend(
            routes, route, gate, declared_size(), failed=failed, tally=meter.tally
        )
        if nxt is None:
            break
        backend = nxt
        backend.acquire()
        meter.tally.retries += 1
        try:
            return await send_upstream(client, backend, target, meter, body, whole=True)
        except RETRYABLE as exc:
            error = exc
        except UpstreamError as exc:
            error = exc
            break
    route.figures.retry_failed += 1
    return bad_gateway(route.formation_id, backend, error)


async def websocket_refused(formation_id: str, rest: str = "") -> Any:
    """A WebSocket handshake to a formation: refused before it is accepted (Hypercorn
    sends this answer as the handshake's HTTP response)."""
    return error_response(
        FsupError(
            "INVALID_REQUEST",
            "the proxy passes on HTTP requests only, not WebSocket upgrades; reach the "
            "formation's WebSocket endpoint on its own port",
            {
                "formation_id": formation_id,
                "upgrade": "websocket",
                "path": websocket.path[:200],
            },
        )
    )


def blueprint() -> Blueprint:
    """`/api/{id}/*`: the proxy (no auth of fsup's: the formation's own)."""
    bp = Blueprint("proxy", __name__)
    bp.record_once(_add_converters)
    # Any rest, `//` and empty included, taken as sent: no slash merging, no redirect.
    bp.add_url_rule(
        "/api/<formation_id>", "proxy_root", proxy, methods=METHODS, merge_slashes=False
    )
    bp.add_url_rule(
        "/api/<formation_id>/<rest:rest>", "proxy", proxy, methods=METHODS, merge_slashes=False
    )
    # `/api/v1/*` is fsup's own API: a WebSocket there is the app's to refuse.
    bp.add_websocket("/api/<proxied:formation_id>", "proxy_ws_root", websocket_refused)
    bp.add_websocket("/api/<proxied:formation_id>/<rest:rest>", "proxy_ws", websocket_refused)
    return bp


def _add_converters(state: BlueprintSetupState) -> None:
    """The proxy's path converters, on the app's router before its rules are added."""
    state.app.url_map.converters.update(rest=_AnyRest, proxied=_ProxiedId)


class _AnyRest(PathConverter):
    regex = ".*"
    part_isolating = False


class _ProxiedId(BaseConverter):
    """A path segment other than `v1`."""

    regex = "(?!v1(?:/|$))[^/]+"

"""The proxy's upstream client: HTTP/1.1 to `127.0.0.1:<port>`, keep-alive connections pooled.

Why not httpx, which the proxy used before: profiled under load (issue 11), a proxied
`GET /api/{id}/health` spent more time in httpx's request and response models (URL parsing,
header merging, cookies, its connection pool's bookkeeping) than in everything else the proxy
does. This client does only what the proxy needs: one request at a time per connection, the
caller's headers as they are (no defaults added: no `User-Agent`, no `Accept-Encoding` the
client did not send), the body streamed or in hand, the answer's body as raw chunks. It runs
on h11 (which Hypercorn already loads) and trio sockets.

A connection goes back to the pool of its port only when its answer ended exactly where its
framing said, both sides may keep it, and nothing is left over: no byte in h11's buffer past
the answer's end (a backend that wrote a second answer after the first, in the same write,
would otherwise hand that answer to the next request), and the port's process was not retired
meanwhile (`close_port`). Anything else closes it. It is taken again (newest first) unless it
has been idle longer than `IDLE_S` or the socket became readable while idle (the formation
closed it, died, or wrote bytes no request asked for).

When a port's process is withdrawn from the route (stopped, restarting, replaced by an update)
`close_port` closes its idle connections at once: a server that waits for its open connections
before it exits (Python's `ThreadingHTTPServer` with `block_on_close`, and many like it) must
not wait for fsup's idle keep-alives.

The failures are the kinds the proxy tells apart: `RETRYABLE` ones mean no byte of the answer
came back, so an idempotent request can be sent again; `FramingError` (an answer whose length
cannot be told) is the formation's fault and is not retried.
"""

from __future__ import annotations

import select
from collections.abc import AsyncIterator
from types import TracebackType
from typing import ClassVar

import h11
import trio

CONNECT_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 60.0
POOL_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 512
MAX_IDLE = 64
IDLE_S = 5.0
READ_CHUNK = 64 * 1024


class UpstreamError(Exception):
    """The formation did not take the request or answer it properly."""

    # The failure's kind, as `/metrics` counts it (`fsup_proxy_upstream_errors_total`); the
    # base class is raised for a request h11 cannot pass on.
    kind: ClassVar[str] = "request"


class ConnectError(UpstreamError):
    """Nothing accepted the connection (refused, or reset while connecting)."""

    kind = "connect"


class ReadError(UpstreamError):
    """The connection failed or closed while the answer was awaited or read."""

    kind = "read"


class WriteError(UpstreamError):
    """The connection failed while the request was sent."""

    kind = "write"


class ProtocolError(UpstreamError):
    """The formation's answer is not HTTP/1.1 that h11 accepts (or it sent none)."""

    kind = "protocol"


class FramingError(UpstreamError):
    """The answer's framing contradicts itself (`Content-Length` beside `Transfer-Encoding`,
    RFC 9112 6.3): where it ends cannot be trusted, so it is neither passed on nor retried."""

    kind = "framing"


class Timeout(UpstreamError):
    """Connecting, sending or waiting for a connection slot took too long."""

    kind = "timeout"


RETRYABLE = (ConnectError, ProtocolError, ReadError, WriteError)
_GONE = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class _Connection:
    def __init__(self, stream: trio.SocketStream, epoch: int) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self.epoch = epoch  # the port's epoch its request saw (see `UpstreamPool.close_port`)

    def clean_end(self) -> bool:
        """The answer ended where its framing said and nothing is left over: both sides are
        done and h11 holds no byte past the end (nor saw the connection close)."""
        machine = self.h11
        return (
            machine.our_state is h11.DONE
            and machine.their_state is h11.DONE
            and machine.trailing_data == (b"", False)
        )

    def usable(self, now: float) -> bool:
        """Idle not too long, and nothing to read: a readable idle socket was closed by the
        formation (or holds bytes no request asked for)."""
        if now - self.idle_since > IDLE_S:
            return False
        poller = select.poll()  # not select(): any fd number
        try:
            poller.register(self.stream.socket.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        """Close without waiting (trio closes a socket at once; no checkpoint needed)."""
        self.stream.socket.close()

    async def write(self, data: bytes) -> None:
        if not data:
            return
        with trio.move_on_after(WRITE_TIMEOUT_S) as scope:
            try:
                await self.stream.send_all(data)
            except _GONE as exc:
                raise WriteError(f"{type(exc).__name__}: {exc}") from None
        if scope.cancelled_caught:
            raise Timeout(f"the formation took no byte for {WRITE_TIMEOUT_S:g}s")

    async def next_event(self) -> object:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolError(str(exc)) from None
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(READ_CHUNK)
            except _GONE as exc:
                raise ReadError(f"{type(exc).__name__}: {exc}") from None
            try:
                self.h11.receive_data(data)
            except h11.RemoteProtocolError as exc:
                raise ProtocolError(str(exc)) from None


class UpstreamResponse:
    """The formation's answer: status and raw headers at once, the body as it arrives.
    `aclose` must be called (the proxy's body does it): it gives the connection back to the
    pool when the answer was read to its end, and closes it otherwise."""

    def __init__(
        self, pool: UpstreamPool, port: int, conn: _Connection, head: h11.Response
    ) -> None:
        self.status_code = head.status_code
        self.headers: list[tuple[bytes, bytes]] = list(head.headers.raw_items())
        self._pool = pool
        self._port = port
        self._conn: _Connection | None = conn
        self._ended = False

    @property
    def ended(self) -> bool:
        """Whether the body was read to the end its framing declared."""
        return self._ended

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower case)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's bytes as they come (de-chunked, never decoded)."""
        conn = self._conn
        while conn is not None and not self._ended:
            event = await conn.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._ended = True
            elif isinstance(event, h11.ConnectionClosed):
                raise ReadError("the formation closed the connection mid-answer")

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._pool.done(self._port, conn, reusable=self._ended)


class UpstreamPool:
    """Connections to formations' ports, kept alive between requests (see the module)."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS, max_idle: int = MAX_IDLE):
        self._slots = trio.Semaphore(max_connections)
        self._idle: dict[int, list[_Connection]] = {}
        self._idle_count = 0
        # Bumped by `close_port`: a connection made under an older epoch is never pooled again.
        self._epochs: dict[int, int] = {}
        self._max_idle = max_idle
        self.connections_opened = 0  # for tests and the curious: pooling at work

    async def __aenter__(self) -> UpstreamPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._idle_count = 0

    def close_port(self, port: int) -> None:
        """The process behind `port` is being retired: close its idle connections now, and
        those still busy when their answer ends (a new process on the same port gets fresh
        ones)."""
        self._epochs[port] = self._epochs.get(port, 0) + 1
        conns = self._idle.pop(port, [])
        self._idle_count -= len(conns)
        for conn in conns:
            conn.close()

    async def send(
        self,
        method: str,
        port: int,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes],
    ) -> UpstreamResponse:
        """Send the request and read the answer's head. `headers` are sent as given, after
        `Host`; a body in hand gets its `Content-Length` (unless empty), a streamed one keeps
        the caller's `Content-Length` or goes chunked."""
        # The port's epoch now, before any checkpoint: the caller chose the port's process
        # just before, so a retirement after this point closes the connection when done.
        epoch = self._epochs.get(port, 0)
        with trio.move_on_after(POOL_TIMEOUT_S) as waited:
            await self._slots.acquire()
        if waited.cancelled_caught:
            raise Timeout(f"no upstream connection came free within {POOL_TIMEOUT_S:g}s")
        conn: _Connection | None = None
        try:
            conn = self._take(port) or await self._connect(port, epoch)
            all_headers = [(b"Host", b"127.0.0.1:%d" % port), *headers]
            has_length = any(name.lower() == b"content-length" for name, _ in headers)
            if isinstance(body, bytes):
                if body and not has_length:
                    all_headers.append((b"Content-Length", b"%d" % len(body)))
            elif not has_length:
                all_headers.append((b"Transfer-Encoding", b"chunked"))
            try:
                head = conn.h11.send(h11.Request(method=method, target=target, headers=all_headers))
                if isinstance(body, bytes):  # one write: head, body and end together
                    data = head or b""
                    if body:
                        data += conn.h11.send(h11.Data(data=body)) or b""
                    await conn.write(data + (conn.h11.send(h11.EndOfMessage()) or b""))
                else:
                    await conn.write(head or b"")
                    async for chunk in body:
                        if chunk:
                            await conn.write(conn.h11.send(h11.Data(data=chunk)) or b"")
                    await conn.write(conn.h11.send(h11.EndOfMessage()) or b"")
            except h11.LocalProtocolError as exc:
                raise UpstreamError(f"the request cannot be passed on: {exc}") from None
            while True:
                event = await conn.next_event()
                if isinstance(event, h11.Response):
                    _check_framing(event)
                    return UpstreamResponse(self, port, conn, event)
                if isinstance(event, h11.ConnectionClosed):
                    raise ProtocolError("the formation closed the connection without answering")
                # An informational answer (100 Continue, 103): the final one follows.
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise

    def done(self, port: int, conn: _Connection, reusable: bool) -> None:
        """An answer is finished with: keep its connection if both sides may reuse it."""
        self._slots.release()
        if not (reusable and conn.clean_end() and conn.epoch == self._epochs.get(port, 0)):
            conn.close()
            return
        conn.h11.start_next_cycle()
        conn.idle_since = trio.current_time()
        self._idle.setdefault(port, []).append(conn)
        self._idle_count += 1
        if self._idle_count > self._max_idle:
            self._drop_oldest()

    def _take(self, port: int) -> _Connection | None:
        conns = self._idle.get(port)
        now = trio.current_time()
        while conns:
            conn = conns.pop()
            self._idle_count -= 1
            if conn.usable(now):
                return conn
            conn.close()
        return None

    def _drop_oldest(self) -> None:
        port, conns = min(
            ((p, c) for p, c in self._idle.items() if c), key=lambda pc: pc[1][0].idle_since
        )
        conns.pop(0).close()
        self._idle_count -= 1

    async def _connect(self, port: int, epoch: int) -> _Connection:
        sock = trio.socket.socket()
        with trio.move_on_after(CONNECT_TIMEOUT_S) as scope:
            try:
                await sock.connect(("127.0.0.1", port))
            except OSError as exc:
                sock.close()
                raise ConnectError(f"{type(exc).__name__}: {exc}") from None
        if scope.cancelled_caught:
            sock.close()
            raise Timeout(f"connecting took longer than {CONNECT_TIMEOUT_S:g}s")
        self.connections_opened += 1
        return _Connection(trio.SocketStream(sock), epoch)


def _check_framing(head: h11.Response) -> None:
    """Refuse an answer that declares both a length and chunks: a proxy that picks one may
    disagree with the client or another hop on where the answer ends (response splitting)."""
    names = {name for name, _ in head.headers}  # h11 gives them lower-cased
    if b"content-length" in names and b"transfer-encoding" in names:
        raise FramingError("the answer has both Content-Length and Transfer-Encoding")

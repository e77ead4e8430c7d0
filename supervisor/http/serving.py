"""Serve the app over HTTP/1.1 with Hypercorn's protocol layer, one contained task per connection.

`hypercorn.trio.serve` runs every connection's task in a nursery inside the caller's, so an
exception escaping one connection ends the whole server, and with it fsup's root nursery (the
actors). Two races in its trio `TCPServer` (0.18.0, the current release) make that reachable
by any client (docs/upstream/hypercorn-trio-close.md has the reproduction):

- `_close()` calls `send_eof()`, which holds the stream's send-conflict detector across a
  checkpoint without the connection's `send_lock`; a concurrent `send_all` (the reader task
  answering a malformed request with its 400) then raises `trio.BusyResourceError`, which is
  not caught and escapes the connection.
- `_close()` and the idle-timer restart run inside the application's task (through the ASGI
  `send`). Quart-Trio cancels that task as soon as the response is done, so the `aclose()`
  after `send_eof()` and the keep-alive timer are cancelled half-way: `Connection: close` and
  HTTP/1.0 connections stay open and idle keep-alive connections are never timed out.

`ContainedTCPServer` fixes both at the source (closing and timer restarts are shielded and
bounded, every write takes the send lock and has a deadline), and `serve_http` runs each
connection in a handler that logs what escapes instead of passing it up. It also installs
h2_guard.py's protocol switch, whose HTTP/2 protocol survives the frames that crashed
Hypercorn's (a body after the answer, a PRIORITY flood, a plain CONNECT). The rest is
Hypercorn's own code: the h11 and h2 protocols, the ASGI bridge, the lifespan, the config.

These are Hypercorn's internals (its documented API is `hypercorn.trio.serve`), private methods
included: pyproject.toml pins Hypercorn to the minor release they were read from (0.18),
docs/upstream/README.md lists every member used here and why, and
tests/test_dependency_pins.py checks them against the installed release.

It also sends a response's head together with its body (issue 11). Hypercorn writes them
separately, and each write on loopback is a system call that also delivers the segment and
wakes the client: profiled, the writes were the largest cost of a small answer. A head is
held until the next write of the connection (the body) and goes out with it; if the body does
not follow before the event loop comes round to the connection's flusher task (a streamed
answer: an event stream, a proxied download), the head goes out alone at that point, so no
answer's head is held for longer than the app's own pause.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

from supervisor.http.early import EarlyListener
from supervisor.http.h2_guard import GuardedProtocolWrapper

log = logging.getLogger("fsup.http.serving")

# A client that does not take a chunk of the answer within this long is gone: the connection
# is closed (a shielded write with no deadline would otherwise hold the task forever).
WRITE_TIMEOUT_S = 60.0
# After the last response, how long the peer may keep sending (its unread body) before the
# socket is closed; closing with unread data makes the kernel send RST, which can destroy the
# answer the client has not read yet.
LINGER_S = 2.0
# At most this many connection failures are logged with a traceback per minute; the rest are
# counted, so a client cannot flood the log.
TRACEBACKS_PER_MINUTE = 10

_STREAM_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)


class ContainedTCPServer(TCPServer):
    """Hypercorn's trio connection with its close and timer races fixed, and a response's
    head sent with its body (see the module)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._reader: trio.lowlevel.Task | None = None
        self._reader_done = trio.Event()
        self._held = b""  # a response head waiting for its body
        self._flusher = trio.lowlevel.ParkingLot()

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            data = event.data
            if not self._held and _holdable(data):
                self._held = data
                self._flusher.unpark()
                return
            await self._write(data)
            return
        await self._flush()
        # Closing and (re)starting the idle timer must finish even when the application task
        # that triggered them is being cancelled.
        with trio.CancelScope(shield=True):
            await super().protocol_send(event)

    async def flush_held(self) -> None:
        """The connection's flusher: a head still held when the loop comes round to this
        task goes out alone (its body is not ready). Runs until the connection ends."""
        while True:
            await self._flusher.park()
            await self._flush()

    async def _flush(self) -> None:
        if self._held:
            await self._write(b"")

    async def _write(self, data: bytes) -> None:
        if self._held:
            data, self._held = self._held + data, b""
        if not data:
            return  # the end of a body with a length: nothing to send
        data = self._write_nowait(data)
        if not data:
            return
        written = False
        with trio.CancelScope(shield=True):
            with trio.move_on_after(WRITE_TIMEOUT_S):
                try:
                    async with self.send_lock:
                        await self.stream.send_all(data)
                    written = True
                except _STREAM_GONE:
                    pass
            if not written:
                await self.protocol.handle(Closed())
                await self.stream.aclose()

    def _write_nowait(self, data: bytes) -> bytes:
        """Hand `data` to the kernel at once when no other write is under way and the socket
        has room (the common case: an SSE frame, a small answer), skipping the lock, the
        timeout scope and trio's send loop; return what is left for the slow path. No await
        between the lock check and the write, so writes stay in order. Any error but a full
        buffer is left to the slow path, which reports it the usual way."""
        socket = getattr(self.stream, "socket", None)
        if socket is None or self.send_lock.locked():
            return data  # TLS, or a write in progress
        try:
            sent = os.write(socket.fileno(), data)
        except OSError:
            return data
        return data[sent:]

    async def _read_data(self) -> None:
        self._reader = trio.lowlevel.current_task()
        # `run()` has just built the connection's protocol switch; nothing has been read yet.
        self.protocol = GuardedProtocolWrapper.replacing(self.protocol)
        try:
            await super()._read_data()
            # The peer closed its side (or the read failed): nothing more can arrive, so the
            # idle keep-alive timer must not hold the connection open for its 5 s (the
            # connection's task group waits for it before closing).
            with trio.CancelScope(shield=True):
                await self.idle_task.stop()
        finally:
            self._reader_done.set()

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(LINGER_S):
                await self._flush()
                async with self.send_lock:
                    try:
                        await self.stream.send_eof()
                    except (*_STREAM_GONE, AttributeError):
                        pass  # already gone, or a TLS stream (no half-close)
                if trio.lowlevel.current_task() is not self._reader:
                    await self._reader_done.wait()  # the reader discards what still arrives
            await self.stream.aclose()


def _holdable(data: bytes) -> bool:
    """A final response's head (never a `100 Continue`: the client waits for it to send)."""
    return data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 1")


class _FailureLog:
    """Log escaped connection failures with a bounded number of tracebacks per minute."""

    def __init__(self) -> None:
        self._window_start = -1e9
        self._logged = 0
        self._suppressed = 0

    def record(self, group: BaseExceptionGroup[Exception]) -> None:
        now = trio.current_time()
        if now - self._window_start >= 60.0:
            if self._suppressed:
                log.error("%d more connection failures were not logged", self._suppressed)
            self._window_start, self._logged, self._suppressed = now, 0, 0
        if self._logged >= TRACEBACKS_PER_MINUTE:
            self._suppressed += 1
            return
        self._logged += 1
        log.error("a connection failed; it was closed and fsup carries on", exc_info=group)


async def serve_http(
    app: Any,
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    early: EarlyListener | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `config.bind` (or on the socket `early` bound, with the connections it
    kept) until `shutdown_trigger` returns, then drain connections for
    `config.graceful_timeout`. Reports the bound URLs through `task_status`."""
    wrapped: AppWrapper = wrap_app(app, config.wsgi_max_body_size, None)
    state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)
    failures = _FailureLog()

    async def serve_connection(stream: trio.SocketStream) -> None:
        try:
            server = ContainedTCPServer(
                wrapped, config, context, ConnectionState(state.copy()), stream
            )
            async with trio.open_nursery() as flushing:
                flushing.start_soon(server.flush_held)
                await server.run()
                flushing.cancel_scope.cancel()
        except* Exception as group:
            failures.record(group)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        listeners, binds = _listeners(config, early)
        async with trio.open_nursery() as connections:
            for sock in early.hand_over() if early is not None else []:
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
                connections.start_soon(serve_connection, stream)
            async with trio.open_nursery() as accepting:
                accepting.start_soon(
                    partial(
                        trio.serve_listeners,
                        serve_connection,
                        listeners,
                        handler_nursery=connections,
                    )
                )
                task_status.started(binds)
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            await context.terminated.set()  # idle keep-alive connections close now
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


def _listeners(
    config: Config, early: EarlyListener | None
) -> tuple[list[trio.SocketListener], list[str]]:
    if early is not None:
        early.socket.setblocking(False)
        insecure = [early.socket]
    else:
        insecure = config.create_sockets().insecure_sockets
    listeners, binds = [], []
    for sock in insecure:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
    return listeners, binds

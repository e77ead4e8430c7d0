"""The proxy's upstream client against real backends (stdlib HTTP servers on loopback).

Pooling is checked where it counts, at the backend: the connections it accepted.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trio
import trio.testing
from helpers import wait_until

from supervisor.http.upstream import (
    RETRYABLE,
    ConnectError,
    FramingError,
    UpstreamError,
    UpstreamPool,
)


class _Counting(ThreadingHTTPServer):
    daemon_threads = True
    accepted = 0
    closed = 0  # connections the server has closed (after their last request)

    def get_request(self) -> Any:
        self.accepted += 1
        return super().get_request()

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.closed += 1


def _handler(protocol: str, close_after: bool = False) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = protocol

        def do_GET(self) -> None:
            self._answer(self.path.encode())

        def do_POST(self) -> None:
            if self.headers.get("Transfer-Encoding") == "chunked":
                body = b""
                while size := int(self.rfile.readline().strip(), 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self._answer(b"got " + body)

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Host", self.headers.get("Host", ""))
            self.end_headers()
            self.wfile.write(body)
            if close_after:
                self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def backend(protocol: str = "HTTP/1.1", close_after: bool = False) -> Iterator[_Counting]:
    server = _Counting(("127.0.0.1", 0), _handler(protocol, close_after))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


async def _get(pool: UpstreamPool, port: int, path: bytes) -> tuple[int, bytes]:
    response = await pool.send("GET", port, path, [(b"Accept", b"*/*")], b"")
    try:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    return response.status_code, body


async def test_a_keep_alive_backend_gets_one_connection() -> None:
    with backend() as server:
        port = server.server_address[1]
        async with UpstreamPool() as pool:
            for i in range(10):
                assert await _get(pool, port, b"/health?i=%d" % i) == (200, b"/health?i=%d" % i)
            assert pool.connections_opened == 1
        assert server.accepted == 1


async def test_an_http10_backend_gets_a_connection_per_request() -> None:
    with backend("HTTP/1.0") as server:
        port = server.server_address[1]
        async with UpstreamPool() as pool:
            for _ in range(3):
                assert await _get(pool, port, b"/x") == (200, b"/x")
        assert server.accepted == 3


async def test_a_connection_the_backend_closed_while_idle_is_not_reused() -> None:
    with backend(close_after=True) as server:
        port = server.server_address[1]
        async with UpstreamPool() as pool:
            for i in range(3):
                assert await _get(pool, port, b"/y") == (200, b"/y")
                await wait_until(lambda i=i: server.closed > i)  # closed while idle in the pool
        assert server.accepted == 3


async def test_an_unfinished_answer_does_not_go_back_to_the_pool() -> None:
    with backend() as server:
        port = server.server_address[1]
        async with UpstreamPool() as pool:
            response = await pool.send("GET", port, b"/z", [], b"")
            await response.aclose()  # body never read
            assert await _get(pool, port, b"/z") == (200, b"/z")
        assert server.accepted == 2


async def _chunks() -> AsyncIterator[bytes]:
    yield b"ab"
    yield b""
    yield b"cd"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([], b"in hand"),
        ([(b"Content-Length", b"4")], None),  # streamed with the client's length
        ([], None),  # streamed, no length: chunked
    ],
)
async def test_bodies_in_hand_and_streamed(headers: list[tuple[bytes, bytes]], body: Any) -> None:
    with backend() as server:
        port = server.server_address[1]
        async with UpstreamPool() as pool:
            response = await pool.send("POST", port, b"/p", headers, body or _chunks())
            answer = b"".join([chunk async for chunk in response.aiter_raw()])
            await response.aclose()
            assert answer == b"got " + (body or b"abcd")
            assert response.header(b"x-host") == b"127.0.0.1:%d" % port


async def test_nothing_listening_is_a_retryable_connect_error() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    async with UpstreamPool() as pool:
        with pytest.raises(ConnectError) as caught:
            await pool.send("GET", port, b"/", [], b"")
    assert isinstance(caught.value, RETRYABLE)


# -- the reuse rule, against a raw-socket backend that can misbehave -------------------------


class RawBackend:
    """A trio backend on raw sockets: each request gets the next scripted reply (bytes, and
    whether to close after); it records the connections it accepted and which ended."""

    def __init__(self, replies: list[tuple[bytes, bool]]) -> None:
        self.replies = replies
        self.accepted = 0
        self.closed_by_peer = 0
        self.port = 0
        self._peer_closed = trio.Event()

    async def wait_closed_by_peer(self, count: int) -> None:
        with trio.fail_after(5):
            while self.closed_by_peer < count:
                await self._peer_closed.wait()

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        self.closed_by_peer += 1
                        self._peer_closed.set()
                        self._peer_closed = trio.Event()
                        return
                    buffer += data
                _, _, buffer = buffer.partition(b"\r\n\r\n")
                reply, close = self.replies.pop(0)
                await stream.send_all(reply)
                if close:
                    return


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def _raw(replies: list[tuple[bytes, bool]], nursery: trio.Nursery) -> RawBackend:
    backend = RawBackend(replies)
    await nursery.start(backend.serve)
    return backend


async def test_an_answer_followed_by_leftover_bytes_closes_its_connection() -> None:
    async with trio.open_nursery() as nursery:
        raw = await _raw([(ok(b"first") + ok(b"LEFTOVER"), False), (ok(b"second"), False)], nursery)
        async with UpstreamPool() as pool:
            assert await _get(pool, raw.port, b"/1") == (200, b"first")
            assert await _get(pool, raw.port, b"/2") == (200, b"second")
            assert pool.connections_opened == 2
        nursery.cancel_scope.cancel()


async def test_clean_answers_reuse_one_connection() -> None:
    async with trio.open_nursery() as nursery:
        raw = await _raw([(ok(b"%d" % i), False) for i in range(5)], nursery)
        async with UpstreamPool() as pool:
            for i in range(5):
                assert await _get(pool, raw.port, b"/") == (200, b"%d" % i)
            assert pool.connections_opened == 1
        nursery.cancel_scope.cancel()


async def test_an_answer_ended_by_the_peer_closing_is_not_reused() -> None:
    unframed = b"HTTP/1.1 200 OK\r\n\r\nuntil close"  # no length: it ends when the peer closes
    async with trio.open_nursery() as nursery:
        raw = await _raw([(unframed, True), (ok(b"again"), False)], nursery)
        async with UpstreamPool() as pool:
            assert await _get(pool, raw.port, b"/") == (200, b"until close")
            assert await _get(pool, raw.port, b"/") == (200, b"again")
            assert pool.connections_opened == 2
        nursery.cancel_scope.cancel()


async def test_a_chunk_cut_short_is_an_error_and_the_connection_is_not_reused() -> None:
    cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n10\r\nxy"
    async with trio.open_nursery() as nursery:
        raw = await _raw([(cut, True), (ok(b"fine"), False)], nursery)
        async with UpstreamPool() as pool:
            response = await pool.send("GET", raw.port, b"/", [], b"")
            got = b""
            with pytest.raises(UpstreamError):
                async for chunk in response.aiter_raw():
                    got += chunk
            await response.aclose()
            assert got.startswith(b"abcd") and not response.ended
            assert await _get(pool, raw.port, b"/") == (200, b"fine")
            assert pool.connections_opened == 2
        nursery.cancel_scope.cancel()


async def test_both_framings_are_a_framing_error_that_is_not_retryable() -> None:
    both = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with trio.open_nursery() as nursery:
        raw = await _raw([(both + b"3\r\nabc\r\n0\r\n\r\n", False), (ok(b"next"), False)], nursery)
        async with UpstreamPool() as pool:
            with pytest.raises(FramingError) as caught:
                await pool.send("GET", raw.port, b"/", [], b"")
            assert not isinstance(caught.value, RETRYABLE)
            assert await _get(pool, raw.port, b"/") == (200, b"next")
            assert pool.connections_opened == 2
        nursery.cancel_scope.cancel()


async def test_close_port_closes_idle_connections_at_once_and_busy_ones_when_done() -> None:
    async with trio.open_nursery() as nursery:
        raw = await _raw([(ok(b"%d" % i), False) for i in range(6)], nursery)
        async with UpstreamPool() as pool:
            assert await _get(pool, raw.port, b"/") == (200, b"0")
            pool.close_port(raw.port)  # idle: closed now, the backend sees it go
            await raw.wait_closed_by_peer(1)
            busy = await pool.send("GET", raw.port, b"/", [], b"")
            pool.close_port(raw.port)  # retired while the answer is read
            assert b"".join([chunk async for chunk in busy.aiter_raw()]) == b"1"
            await busy.aclose()
            await raw.wait_closed_by_peer(2)
            # A new process on the same port gets a connection kept as usual.
            assert await _get(pool, raw.port, b"/") == (200, b"2")
            assert await _get(pool, raw.port, b"/") == (200, b"3")
            assert pool.connections_opened == 3
        nursery.cancel_scope.cancel()


async def test_a_request_sent_before_its_port_was_retired_does_not_pool_its_connection() -> None:
    """The request chose the old process; it waits for a connection slot while the port is
    retired, then connects: that connection may reach the old process, so it is not kept."""
    async with trio.open_nursery() as nursery:
        raw = await _raw([(ok(b"%d" % i), False) for i in range(3)], nursery)
        async with UpstreamPool(max_connections=1) as pool:
            first = await pool.send("GET", raw.port, b"/", [], b"")
            answers: list[tuple[int, bytes]] = []
            answered = trio.Event()

            async def second() -> None:
                answers.append(await _get(pool, raw.port, b"/"))
                answered.set()

            nursery.start_soon(second)
            await trio.testing.wait_all_tasks_blocked()  # waiting for the only slot
            pool.close_port(raw.port)
            assert b"".join([chunk async for chunk in first.aiter_raw()]) == b"0"
            await first.aclose()
            with trio.fail_after(5):
                await answered.wait()
            assert answers == [(200, b"1")]
            assert await _get(pool, raw.port, b"/") == (200, b"2")
            assert pool.connections_opened == 3
        nursery.cancel_scope.cancel()

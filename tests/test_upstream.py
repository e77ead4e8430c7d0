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

from supervisor.http.upstream import RETRYABLE, ConnectError, UpstreamPool


class _Counting(ThreadingHTTPServer):
    daemon_threads = True
    accepted = 0

    def get_request(self) -> Any:
        self.accepted += 1
        return super().get_request()


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
            for _ in range(3):
                assert await _get(pool, port, b"/y") == (200, b"/y")
                await trio.sleep(0.05)  # the backend's close arrives while idle
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

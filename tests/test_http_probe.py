"""The HTTP health probe against scripted servers on loopback: what it keeps, what it does
not, and what it says when no status comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from actors import http_probe
from actors.http_probe import HttpProbe

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# How a scripted server answers the n-th request (0-based) on a connection: the bytes to
# send, and whether to close the connection afterwards. None: close without answering.
Script = Callable[[int], tuple[bytes, bool] | None]


class Scripted:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        served = 0
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                _, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests += 1
                answer = self.script(served)
                served += 1
                if answer is None:
                    return
                data, close = answer
                try:
                    await stream.send_all(data)
                except trio.BrokenResourceError:
                    return  # the probe read what it needed and hung up
                if close:
                    return


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[tuple[Scripted, int]]:
    server = Scripted(script)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        yield server, listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def probes(port: int, count: int, path: str = "/health") -> list[str | None]:
    probe = HttpProbe(path, 2.0)
    try:
        results = []
        for _ in range(count):
            results.append(await probe.check(port))
            await trio.sleep(0.01)  # as between liveness checks: the server sees the idle
        return results
    finally:
        probe.close()


async def test_one_connection_serves_every_check_while_the_service_keeps_it() -> None:
    async with scripted(lambda n: (OK, False)) as (server, port):
        assert await probes(port, 5) == [None] * 5
        assert server.connections == 1 and server.requests == 5


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nok",  # the body ends with the connection
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000,  # too big to drain
    ],
    ids=["connection-close", "http-1.0", "chunked", "no-length", "large"],
)
async def test_a_connection_is_not_kept_when_the_answer_does_not_allow_it(answer: bytes) -> None:
    async with scripted(lambda n: (answer, True)) as (server, port):
        assert await probes(port, 3) == [None] * 3
        assert server.connections == 3


async def test_http_1_0_keep_alive_is_kept() -> None:
    answer = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    async with scripted(lambda n: (answer, False)) as (server, port):
        assert await probes(port, 3) == [None] * 3
        assert server.connections == 1


async def test_an_idle_connection_the_service_closed_is_replaced_before_the_request() -> None:
    # The service answers, then closes the idle connection (its keep-alive timer).
    async with scripted(lambda n: (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True)) as (
        server,
        port,
    ):
        assert await probes(port, 3) == [None] * 3
        assert server.connections == 3 and server.requests == 3  # no request lost to a dead one


async def test_a_request_the_service_drops_on_a_kept_connection_is_sent_once_more() -> None:
    # Closed as the second request arrives (the race the peek cannot see): sent again.
    async with scripted(lambda n: (OK, False) if n == 0 else None) as (server, port):
        assert await probes(port, 2) == [None, None]
        assert server.connections == 2 and server.requests == 3


async def test_a_connection_is_used_for_reuse_s_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_probe, "REUSE_S", 0.0)
    async with scripted(lambda n: (OK, False)) as (server, port):
        assert await probes(port, 3) == [None] * 3
        assert server.connections == 3


async def test_what_a_check_says_when_no_status_comes_back() -> None:
    async with scripted(lambda n: (b"SSH-2.0-OpenSSH\r\n\r\n", True)) as (_, port):
        [error] = await probes(port, 1)
        assert error is not None and error.startswith("GET /health: RemoteProtocolError")
    async with scripted(lambda n: None) as (_, port):
        [error] = await probes(port, 1)
        assert error is not None and "ReadError" in error
    async with scripted(lambda n: (b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", False)) as (
        _,
        port,
    ):
        assert await probes(port, 1) == ["GET /health answered 503"]


async def test_a_service_that_never_answers_times_out() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        probe = HttpProbe("/health", 0.2)
        error = await probe.check(port)
        assert error == "GET /health: Timeout no answer within 0.2s"
        nursery.cancel_scope.cancel()

"""The HTTP serving layer on raw sockets: no client can end it, and connections close as HTTP says.

A small Quart-Trio app served by `serve_http` in this process; each client speaks raw bytes so
that nothing smooths over what the server really does on the wire.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
from hypercorn.config import Config
from quart import request
from quart_trio import QuartTrio

from supervisor.http.serving import serve_http

KEEP_ALIVE_S = 0.5
# A keep-alive timer that no test waits for: a close that comes within `DEADLINE_S` on this
# server did not come from the timer.
PATIENT_KEEP_ALIVE_S = 60.0
# How long a client waits for what should take milliseconds before the test fails: generous,
# so that a loaded machine does not fail it; far below what a hang would take.
DEADLINE_S = 10.0


def _app() -> QuartTrio:
    app = QuartTrio("serving-test")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.post("/echo")
    async def echo() -> bytes:
        return await request.get_data()

    return app


@asynccontextmanager
async def _serving(keep_alive_s: float) -> AsyncIterator[int]:
    """The app served on a free port (yielded) with this keep-alive timeout."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.keep_alive_timeout = keep_alive_s
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve_http, _app(), config, shutdown_trigger=stop.wait))
        yield int(binds[0].rsplit(":", 1)[1])
        stop.set()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A server whose idle connections are closed after `KEEP_ALIVE_S`."""
    async with _serving(KEEP_ALIVE_S) as bound:
        yield bound


@pytest.fixture
async def patient_port() -> AsyncIterator[int]:
    """A server whose keep-alive timer never fires within a test's deadline: whatever closes
    a connection there is not the timer."""
    async with _serving(PATIENT_KEEP_ALIVE_S) as bound:
        yield bound


async def _until_eof(stream: trio.SocketStream) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took; the test fails
    if the server has not closed within `DEADLINE_S`."""
    start, data = trio.current_time(), b""
    with trio.move_on_after(DEADLINE_S):
        while chunk := await stream.receive_some(65536):
            data += chunk
        return data, trio.current_time() - start
    raise AssertionError(f"the server did not close within {DEADLINE_S}s; it sent {data[:200]!r}")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    ],
    ids=["connection-close", "http-1.0", "post-connection-close"],
)
async def test_the_server_closes_when_the_request_says_close(
    patient_port: int, request_bytes: bytes
) -> None:
    """Closed after the answer (within the deadline, so not by the keep-alive timer)."""
    stream = await trio.open_tcp_stream("127.0.0.1", patient_port)
    async with stream:
        await stream.send_all(request_bytes)
        data, _ = await _until_eof(stream)
    assert data.startswith(b"HTTP/1.1 200")


async def test_an_idle_keep_alive_connection_is_closed(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data, took = await _until_eof(stream)
    assert data.startswith(b"HTTP/1.1 200") and data.count(b"HTTP/1.1") == 1
    assert KEEP_ALIVE_S * 0.8 <= took  # by the timer (a loaded machine only makes it later)


async def test_a_client_that_shuts_its_side_after_the_answer_is_closed_at_once(
    patient_port: int,
) -> None:
    """The answer is complete (the keep-alive timer runs), then the client half-closes: fsup
    closes now, within the deadline, not when the keep-alive timer would (Hypercorn's
    connection task group waited for that timer after the read side ended)."""
    stream = await trio.open_tcp_stream("127.0.0.1", patient_port)
    async with stream:
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        with trio.fail_after(DEADLINE_S):
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(65536)
        # Meant to land after the cycle is over and the idle timer restarted. No signal says
        # so; on a slow machine the EOF may come during the cycle, which must close at once too.
        await trio.sleep(0.05)
        await stream.send_eof()
        await _until_eof(stream)
    assert head.startswith(b"HTTP/1.1 200")


async def test_a_connection_that_never_sends_a_request_is_closed(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        data, _ = await _until_eof(stream)
    assert data == b""


BAD_CHUNKS = [
    [b"5\r\nabcde\r\nzz\r\nabc\r\n0\r\n\r\n"],
    [b"zz\r\n"],
    [b"5\r\nabcde\r\n", b"zz\r\n"],
    [b"5\r\nab"],
    [b"0\r\n\r\n"],
]


@pytest.mark.parametrize("path", [b"/nope", b"/echo", b"/health"])
async def test_malformed_chunked_bodies_never_end_the_server(port: int, path: bytes) -> None:
    """Stock Hypercorn 0.18 exits on this within a few rounds (BusyResourceError)."""
    for _ in range(3):
        for body, mode in itertools.product(BAD_CHUNKS, ["close", "shut", "wait"]):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(
                    b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                for part in body:
                    await stream.send_all(part)
                if mode == "close":
                    continue
                if mode == "shut":
                    await stream.send_eof()
                with trio.move_on_after(2):
                    await stream.receive_some(300)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = await _until_eof(stream)
    assert data.startswith(b"HTTP/1.1 200")


async def test_a_client_that_never_reads_does_not_hold_up_others(port: int) -> None:
    """Another client is answered while the hog's echo is stuck: within the deadline, far
    below the write timeout (60 s) after which the hog's connection would be dropped."""
    hog = await trio.open_tcp_stream("127.0.0.1", port)
    async with hog:
        big = b"x" * (8 * 1024 * 1024)
        head = f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(big)}\r\n\r\n".encode()
        with trio.move_on_after(1):
            await hog.send_all(head + big)  # the echo fills both socket buffers
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, _ = await _until_eof(stream)
    assert data.startswith(b"HTTP/1.1 200")

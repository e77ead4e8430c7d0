"""The port bound before the server loads: `/health` answered at once, nothing else lost.

`EarlyListener` answers `GET /health` and `GET /ping` from a thread; every other connection is
kept unread and, once the server runs (`serve_http(..., early=...)`), served by it as if it
had accepted it itself. Raw sockets, so nothing smooths over what happens on the wire.
"""

from __future__ import annotations

import json
import socket
import time
from functools import partial

import trio
from hypercorn.config import Config
from quart import request
from quart_trio import QuartTrio

from supervisor.http.early import EarlyListener
from supervisor.http.serving import serve_http


def _exchange(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def test_health_and_ping_are_answered_before_the_server_runs() -> None:
    early = EarlyListener("127.0.0.1", 0).start()
    port = early.socket.getsockname()[1]
    try:
        for path, body in ((b"/health", {"status": "healthy"}), (b"/ping", {"message": "pong"})):
            answer = _exchange(port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head
            assert json.loads(payload) == body
        assert early.answered == 2
    finally:
        early.close()


def test_anything_else_is_kept_unread() -> None:
    early = EarlyListener("127.0.0.1", 0).start()
    port = early.socket.getsockname()[1]
    requests = [
        b"GET /rpc/formations HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab",  # a body
        b"GET /health?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\n",  # the head is not whole yet
    ]
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in requests]
    try:
        for client, raw in zip(clients, requests, strict=True):
            client.sendall(raw)
        deadline = time.monotonic() + 10
        while early.held < len(requests) and time.monotonic() < deadline:
            time.sleep(0.01)
        kept = early.hand_over()
        seen = set()
        for conn in kept:
            conn.setblocking(True)
            seen.add(conn.recv(65536))
            conn.close()
        assert seen == set(requests)
        assert early.answered == 0
    finally:
        for client in clients:
            client.close()
        early.close()


async def test_the_server_serves_what_was_kept() -> None:
    app = QuartTrio("early-test")

    @app.post("/echo")
    async def echo() -> bytes:
        return await request.get_data()

    early = EarlyListener("127.0.0.1", 0).start()
    port = early.socket.getsockname()[1]
    waiting = trio.to_thread.run_sync(
        _exchange,
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    answers: list[bytes] = []
    answered = trio.Event()

    async def client() -> None:
        answers.append(await waiting)
        answered.set()

    config = Config()
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        await trio.sleep(0.2)  # kept by the early listener meanwhile
        binds = await nursery.start(
            partial(serve_http, app, config, shutdown_trigger=stop.wait, early=early)
        )
        assert binds == [f"http://127.0.0.1:{port}"]
        with trio.fail_after(10):
            await answered.wait()
        later = await trio.to_thread.run_sync(
            _exchange, port, b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        stop.set()
    assert answers[0].startswith(b"HTTP/1.1 200 ") and answers[0].endswith(b"hello")
    assert later.startswith(b"HTTP/1.1 404 ")
    early.close()

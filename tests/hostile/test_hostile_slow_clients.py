"""Slow and rude clients on raw sockets: trickled heads and bodies, half-closed sockets,
readers that never read, hundreds of connections opened and dropped, `Connection: close`,
HTTP/1.0, idle keep-alive, and unsigned uploads of 50 MB that must be refused unread.

Bounds (docs/decisions.md): an idle keep-alive connection closes after 5 s (checked within
`IDLE_BOUND_S`), `Connection: close` and HTTP/1.0 right after the answer (`CLOSE_BOUND_S`), a
proxied body that stalls is answered 408 after 30 s (`PROXY_STALL_BOUND_S`). A client that
trickles its head forever must be dropped within `HEAD_STALL_BOUND_S`. The long waits run in
the background from the start of the module and are checked by the last cases.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
from hostile_contract import BOUND_S, assert_error
from hostile_kit import Target
from hostile_slow_kit import (
    Stall,
    assert_served_meanwhile,
    close_with_reset,
    unsigned_list,
    upload,
    wait_unread,
)
from hostile_wire import Conn, Reply, connect, read_response, request_bytes, rfc3339, send_quietly

pytestmark = pytest.mark.e2e

FLEET = ("alpha",)
CLOSE_BOUND_S = 3.0
IDLE_BOUND_S = 10.0
HEAD_STALL_BOUND_S = 30.0
PROXY_STALL_BOUND_S = 40.0
# How long a trickled head waits for the others to be served: within fsup's 5 s idle timer.
TRICKLE_HOLD_S = 4.0
UPLOAD = 50 * 1024 * 1024


# ---- background stalls, started with the module ---------------------------------------------


@pytest.fixture(scope="module")
def stalls(target: Target) -> Iterator[dict[str, Stall]]:
    host = target.host_header
    found = {
        "head-trickle": Stall(
            "head-trickle",
            f"GET /health HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode(),
            trickle=True,
        ),
        "proxy-body": Stall(
            "proxy-body",
            request_bytes("POST", "/api/alpha/echo", [("Content-Length", "1000")], host=host)
            + b"0123456789",
        ),
    }
    threads = []
    for stall in found.values():
        watch = HEAD_STALL_BOUND_S if stall.trickle else PROXY_STALL_BOUND_S
        thread = threading.Thread(target=stall.run, args=(target.addr, watch + 5), daemon=True)
        thread.start()
        threads.append(thread)
    yield found
    for thread in threads:
        thread.join(PROXY_STALL_BOUND_S + 10)


@pytest.fixture(autouse=True)
def _start_stalls_first(stalls: dict[str, Stall]) -> None:
    """Every case asks for the stalls, so they start with the module's first case."""


# ---- connections closing as HTTP says -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/health", 200, id="health"),
        pytest.param("/rpc/formations", 401, id="unsigned-rpc"),
        pytest.param("/api/alpha/echo", 200, id="proxy"),
        pytest.param("/api/nobody/x", 404, id="proxy-unknown-formation"),
    ],
)
def test_connection_close_is_honoured(target: Target, path: str, status: int) -> None:
    data = request_bytes("GET", path, [("Connection", "close")], host=target.host_header)
    reply = target.send(data, watch_close=CLOSE_BOUND_S)
    assert reply.status == status, reply.describe()
    if status >= 400:
        assert_error(reply, status)
    assert reply.closed, f"fsup kept the connection open after Connection: close ({path})"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/health", 200, id="health"),
        pytest.param("/rpc/formations", 401, id="unsigned-rpc"),
    ],
)
def test_http10_without_keepalive_closes(target: Target, path: str, status: int) -> None:
    data = request_bytes("GET", path, host=target.host_header, version="HTTP/1.0")
    reply = target.send(data, watch_close=CLOSE_BOUND_S)
    assert reply.status == status, reply.describe()
    if status >= 400:
        assert_error(reply, status)
    assert reply.closed, "fsup kept an HTTP/1.0 connection open"


def test_idle_keepalive_is_closed(target: Target) -> None:
    reply = target.send(unsigned_list(target), watch_close=IDLE_BOUND_S)
    assert_error(reply, 401, "UNAUTHORIZED")
    assert reply.closed, f"an idle keep-alive connection was still open after {IDLE_BOUND_S}s"


def test_pipelined_requests_each_answered(target: Target) -> None:
    """Two unsigned requests in one packet: two 401s, in order, then a clean close."""
    data = unsigned_list(target) + unsigned_list(target, ("Connection", "close"))
    reply = target.send(data, watch_close=CLOSE_BOUND_S)
    assert_error(reply, 401, "UNAUTHORIZED")
    assert reply.closed and reply.extra.startswith(b"HTTP/1.1 401"), reply.extra[:200]


def test_garbage_after_a_request_on_keepalive(target: Target) -> None:
    """A good request, then bytes that are no HTTP: the first is answered, then the
    connection is refused (400) and closed."""
    data = request_bytes("GET", "/health", host=target.host_header) + b"\x16\x03\x01\x00\xff" * 50
    reply = target.send(data, watch_close=CLOSE_BOUND_S)
    assert reply.status == 200, reply.describe()
    assert reply.closed, "fsup kept a connection that sent garbage"
    assert reply.extra == b"" or reply.extra.startswith(b"HTTP/1.1 400"), reply.extra[:200]


# ---- half-closed sockets ---------------------------------------------------------------------


def test_half_closed_after_a_full_request(target: Target) -> None:
    """The client shuts its side after the request: the answer still comes, then a close."""
    reply = target.send(unsigned_list(target), shut_write=True, watch_close=CLOSE_BOUND_S)
    assert_error(reply, 401, "UNAUTHORIZED")
    assert reply.closed


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Cut: ", id="mid-head"),
        pytest.param(
            b"POST /api/v1/searches HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n"
            b'Authorization: Bearer {token}\r\n\r\n{"keyword":',
            id="mid-body",
        ),
        pytest.param(
            b"POST /api/alpha/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n01234",
            id="mid-proxied-body",
        ),
        pytest.param(
            b"POST /api/v1/searches HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Authorization: Bearer {token}\r\n\r\n5\r\nab",
            id="mid-chunk",
        ),
    ],
)
def test_half_closed_mid_request_is_closed(target: Target, data: bytes) -> None:
    """The client shuts its side before the request is whole: fsup closes promptly (with a
    4xx or without an answer), never waits for bytes that cannot come (the answer and then
    the close each have `BOUND_S`; the waits a hang would meet are 30 s and more)."""
    data = data.replace(b"{token}", target.token.encode())
    started = time.monotonic()
    with connect(target.addr) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        conn = Conn(sock, started + BOUND_S)
        reply = read_response(conn, head_only=False)
        closed = conn.wait_eof(BOUND_S) if reply.status is not None else True
    target.check_secrets(conn.raw)
    assert closed, "fsup kept a half-closed connection with an incomplete request"
    if reply.status is not None:
        assert 400 <= reply.status < 500, reply.describe()
        if reply.body.strip():
            assert_error(reply, reply.status)


# ---- trickles ------------------------------------------------------------------------------------


def test_trickled_head_is_answered_and_others_are_served(target: Target) -> None:
    """A head sent a byte at a time, its last byte held back until others have been served:
    they are served while it is incomplete, and it is answered (401) once whole. The wait
    for the others is bounded by fsup's idle timer, which drops a head not whole in 5 s."""
    data = unsigned_list(target)
    begun, served = threading.Event(), threading.Event()
    in_time: list[bool] = []

    def pieces() -> Iterator[tuple[bytes, float]]:
        for i in range(len(data) - 1):
            yield data[i : i + 1], 0.5 / len(data)
            begun.set()
        in_time.append(served.wait(TRICKLE_HOLD_S))
        yield data[-1:], 0.0

    box: dict[str, Reply] = {}
    sender = threading.Thread(target=lambda: box.update(reply=target.send(pieces())))
    sender.start()
    try:
        assert begun.wait(BOUND_S), "the trickle did not begin"
        assert_served_meanwhile(target)
    finally:
        served.set()
        sender.join(30)
    assert in_time == [True], f"others were not served within {TRICKLE_HOLD_S}s of the trickle"
    assert_error(box["reply"], 401, "UNAUTHORIZED", within=15)


def test_trickled_unsigned_body_is_refused_before_it_is_whole(target: Target) -> None:
    """An unsigned deploy trickling 100 kB at 10 kB/s: the 401 comes from the head alone."""
    head = request_bytes(
        "POST",
        "/rpc/formations/deploy",
        [("Content-Type", "application/gzip"), ("Content-Length", "100000")],
        host=target.host_header,
    )
    started = time.monotonic()
    with connect(target.addr) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        received, sent = b"", 0
        while time.monotonic() - started < 15 and b"\r\n\r\n" not in received:
            ready, _, _ = select.select([sock], [], [], 0.1)
            if ready:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                received += chunk
            elif sent < 100_000:
                try:
                    sent += sock.send(b"\0" * 1000)
                except OSError:
                    break
        elapsed = time.monotonic() - started
        sock.setblocking(True)
        conn = Conn(sock, time.monotonic() + BOUND_S)
        conn.buf = conn.raw = received
        reply = read_response(conn, head_only=False)
    reply.elapsed = elapsed
    assert_error(reply, 401, "UNAUTHORIZED")
    # Counted, not timed: 1 kB goes out each 0.1 s without an answer, so the whole body would
    # take 10 s of them.
    assert sent < 100_000, "the refusal waited for the whole trickled body"


# ---- uploads refused unread ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("POST", "/rpc/formations/deploy", id="deploy"),
        pytest.param("POST", "/rpc/formations", id="deploy-alias"),
        pytest.param("PUT", "/rpc/formations/alpha", id="update"),
    ],
)
def test_unsigned_50mb_upload_is_refused_unread(target: Target, method: str, path: str) -> None:
    head = request_bytes(
        method,
        path,
        [("Content-Type", "application/gzip"), ("Content-Length", str(UPLOAD))],
        host=target.host_header,
    )
    reply, sent, cut = upload(target, head, UPLOAD)
    assert sent < UPLOAD, f"fsup read all {UPLOAD} bytes of an unsigned upload before refusing"
    if reply.status is not None:
        assert_error(reply, 401, "UNAUTHORIZED")
    else:
        assert cut, "fsup neither answered nor closed"


@pytest.mark.parametrize(
    "tamper",
    [pytest.param("stale", id="stale-timestamp"), pytest.param("key", id="foreign-key-id")],
)
def test_badly_signed_50mb_upload_is_refused_unread(target: Target, tamper: str) -> None:
    """What the head alone shows is wrong (the time, the key) is refused before the body."""
    path = "/rpc/formations/deploy"
    signed = dict(
        target.signer.headers(
            "POST",
            path,
            b"body-not-sent",
            timestamp=rfc3339(-600) if tamper == "stale" else None,
            key_id="MUXI_LOCAL_foreign" if tamper == "key" else None,
        )
    )
    head = request_bytes(
        "POST",
        path,
        [*signed.items(), ("Content-Type", "application/gzip"), ("Content-Length", str(UPLOAD))],
        host=target.host_header,
    )
    reply, sent, cut = upload(target, head, UPLOAD)
    assert sent < UPLOAD, "fsup read the whole body of a request its head already disqualified"
    if reply.status is not None:
        assert_error(reply, 401, "UNAUTHORIZED")
    else:
        assert cut


def test_unsigned_upload_with_expect_continue_gets_401_without_a_body(target: Target) -> None:
    """`Expect: 100-continue` and no body sent: fsup answers 401 from the head."""
    head = request_bytes(
        "POST",
        "/rpc/formations/deploy",
        [
            ("Content-Type", "application/gzip"),
            ("Expect", "100-continue"),
            ("Content-Length", str(UPLOAD)),
        ],
        host=target.host_header,
    )
    reply = target.send(head, timeout=BOUND_S + 1)
    assert_error(reply, 401, "UNAUTHORIZED")


def test_over_limit_content_length_is_refused_unread(target: Target) -> None:
    """A signed head announcing more than max_body_bytes: 413 before the body is read."""
    path = "/rpc/formations/deploy"
    total = 200 * 1024 * 1024
    signed = target.signer.headers("POST", path, b"not-sent")
    head = request_bytes(
        "POST",
        path,
        [*signed, ("Content-Type", "application/gzip"), ("Content-Length", str(total))],
        host=target.host_header,
    )
    reply, sent, cut = upload(target, head, total)
    assert sent < total
    assert_error(reply, (401, 413), ("UNAUTHORIZED", "PAYLOAD_TOO_LARGE"))


# ---- readers that never read, crowds -------------------------------------------------------------


@pytest.fixture(scope="module")
def big_log(target: Target) -> int:
    """alpha's stdout grown by about 600 kB, so its logs are a large answer."""
    line = "L" * 150
    for _ in range(40):
        target.http.get(
            "/api/alpha/say", params={"text": ",".join([line] * 100)}
        ).raise_for_status()
    return 10_000


def test_reader_that_never_reads_a_large_answer(target: Target, big_log: int) -> None:
    """20 pipelined 2 MB log answers to a client with a tiny window that never reads: others
    are served meanwhile, and dropping it leaves nothing behind."""
    path = f"/rpc/formations/alpha/logs?lines={big_log}"
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(target.addr)
    try:
        for _ in range(20):
            data = request_bytes(
                "GET", path, target.signer.headers("GET", path), host=target.host_header
            )
            if not send_quietly(sock, data):
                break
        wait_unread(sock)  # fsup is answering into a window that never opens
        assert_served_meanwhile(target, hog=sock)
        assert_served_meanwhile(target, hog=sock)
    finally:
        close_with_reset(sock)


def test_pipelined_flood_never_read(target: Target) -> None:
    """3000 pipelined requests from a client that never reads: others are served."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(target.addr)
    sock.settimeout(2.0)
    try:
        one = unsigned_list(target)
        for _ in range(30):
            try:
                sock.sendall(one * 100)
            except (TimeoutError, OSError):
                break  # fsup stopped reading: that is the back-pressure we want
        assert_served_meanwhile(target, hog=sock)
    finally:
        close_with_reset(sock)


def _fds(target: Target) -> int:
    assert target.server.proc is not None
    return psutil.Process(target.server.proc.pid).num_fds()


def test_200_connections_opened_and_dropped(target: Target) -> None:
    """200 connections, half with a partial head, all reset: fsup serves on and its file
    descriptors come back to where they were."""
    before = _fds(target)
    socks = []
    for index in range(200):
        sock = connect(target.addr)
        if index % 2:
            sock.sendall(b"GET /rpc/formations HTTP/1.1\r\nHo")
        socks.append(sock)
    for sock in socks:
        close_with_reset(sock)
    assert_served_meanwhile(target)
    deadline = time.monotonic() + 10
    while _fds(target) > before + 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _fds(target) <= before + 5, f"fsup holds {_fds(target) - before} more descriptors"


def test_200_idle_connections_do_not_block_others(target: Target) -> None:
    socks = [connect(target.addr) for _ in range(200)]
    try:
        assert_served_meanwhile(target)
    finally:
        for sock in socks:
            sock.close()


def test_reset_in_the_middle_of_an_answer(target: Target, big_log: int) -> None:
    path = f"/rpc/formations/alpha/logs?lines={big_log}"
    for _ in range(10):
        sock = connect(target.addr)
        sock.sendall(
            request_bytes("GET", path, target.signer.headers("GET", path), host=target.host_header)
        )
        sock.recv(1024)
        close_with_reset(sock)
    assert_served_meanwhile(target)


# ---- the background stalls, checked last ------------------------------------------------------------


def test_head_trickled_forever_is_dropped(target: Target, stalls: dict[str, Stall]) -> None:
    """A head that never ends (a byte a second): fsup drops it within the bound."""
    stall = stalls["head-trickle"]
    stall.done.wait(HEAD_STALL_BOUND_S + 10)
    assert stall.closed_after is not None, (
        f"a client trickling its head was still connected after {HEAD_STALL_BOUND_S}s"
    )
    assert_served_meanwhile(target)


def test_stalled_proxied_body_is_answered_408(target: Target, stalls: dict[str, Stall]) -> None:
    """10 of 1000 announced bytes, then nothing: 408 within the bound, and the formation's
    in-flight count is given back (alpha still answers)."""
    stall = stalls["proxy-body"]
    stall.done.wait(PROXY_STALL_BOUND_S + 10)
    assert stall.answer.startswith(b"HTTP/1.1 408"), (
        f"no 408 for a stalled proxied body: {stall.answer[:200]!r} "
        f"(closed after {stall.closed_after})"
    )
    reply = target.request("GET", "/api/alpha/echo")
    assert reply.status == 200, reply.describe()

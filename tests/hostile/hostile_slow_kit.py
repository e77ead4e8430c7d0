"""The slow and rude clients of `test_hostile_slow_clients.py`, on raw sockets: a connection
left hanging in the background (`Stall`), an upload pushed as fast as fsup takes it until fsup
answers or cuts it (`upload`), a close by reset, and the probe that other clients are still
served meanwhile. The cases say what fsup must do; these say how a client misbehaves, kept
apart so that the cases read as the bounds they check.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from hostile_contract import BOUND_S
from hostile_kit import Target
from hostile_wire import Conn, Reply, connect, read_response, request_bytes, send_quietly

# A round of another client's requests (milliseconds) must end within this: generous for a
# loaded machine, and far below the bounds (30 s and more) that would free a blocked server.
SERVED_WITHIN_S = 10.0
TCP_ESTABLISHED = 1  # Linux's include/net/tcp_states.h


@dataclass
class Stall:
    """One connection left hanging; `closed_after` is how long after its last byte fsup
    closed it (None: still open when the watch ended)."""

    name: str
    head: bytes
    trickle: bool = False  # keep sending one byte a second, never finishing the head
    closed_after: float | None = None
    answer: bytes = b""
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, addr: tuple[str, int], watch_s: float) -> None:
        try:
            with connect(addr) as sock:
                sock.sendall(self.head)
                last = start = time.monotonic()
                while time.monotonic() - start < watch_s:
                    ready, _, _ = select.select([sock], [], [], 1.0)
                    if ready:
                        try:
                            data = sock.recv(65536)
                        except OSError:
                            data = b""
                        if not data:
                            self.closed_after = time.monotonic() - last
                            return
                        self.answer += data
                    elif self.trickle:
                        if not send_quietly(sock, b"x"):
                            self.closed_after = time.monotonic() - last
                            return
                        last = time.monotonic()
        finally:
            self.done.set()


def unsigned_list(target: Target, *headers: tuple[str, str], version: str = "HTTP/1.1") -> bytes:
    return request_bytes(
        "GET", "/rpc/formations", list(headers), host=target.host_header, version=version
    )


def quick_service(target: Target, rounds: int = 3) -> list[float]:
    """How long /health and a signed GET /rpc/formations take for another client."""
    times = []
    for _ in range(rounds):
        started = time.monotonic()
        assert target.http.get("/health", timeout=SERVED_WITHIN_S).status_code == 200
        assert "formations" in target.rpc.call("GET", "/rpc/formations")
        times.append(time.monotonic() - started)
    return times


def assert_served_meanwhile(target: Target, hog: socket.socket | None = None) -> None:
    """Another client is served, each round within `SERVED_WITHIN_S`; with `hog`, while that
    connection is still open (fsup's own bounds on it, 30 s and more, have not ended it)."""
    slowest = max(quick_service(target))
    assert slowest <= SERVED_WITHIN_S, f"other clients waited {slowest:.2f}s meanwhile"
    if hog is not None:
        assert still_open(hog), "fsup closed the rude connection before the others were served"


def still_open(sock: socket.socket) -> bool:
    """Whether the peer has neither closed nor reset `sock`, from the kernel's TCP state
    (Linux's `tcp_info`): a read would not tell while unread answers sit before the end."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_ESTABLISHED


def wait_unread(sock: socket.socket, within: float = SERVED_WITHIN_S) -> None:
    """Until fsup has sent something that `sock` has not read (an answer has started)."""
    deadline = time.monotonic() + within
    while not select.select([sock], [], [], 0.05)[0]:
        assert time.monotonic() < deadline, f"no answer began within {within}s"


def close_with_reset(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a crashed client would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def upload(target: Target, head: bytes, total: int) -> tuple[Reply, int, bool]:
    """Send `head`, then `total` bytes of body as fast as fsup takes them, until fsup answers
    or closes. Returns the answer, how much was sent by then, and whether fsup cut the
    connection (a reset or a close) before the body was whole."""
    started = time.monotonic()
    chunk = b"\0" * 65536
    received, sent, cut = b"", 0, False
    with connect(target.addr) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        while time.monotonic() - started < 60:
            wanted = [sock] if sent < total else []
            readable, writable, _ = select.select([sock], wanted, [], 1.0)
            if readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    cut = sent < total
                    break
                received += data
                if b"\r\n\r\n" in received:
                    break
            if writable:
                try:
                    sent += sock.send(chunk[: total - sent])
                except (BrokenPipeError, ConnectionResetError):
                    cut = True
                    break
                except BlockingIOError:
                    pass
        elapsed = time.monotonic() - started
        sock.setblocking(True)
        conn = Conn(sock, time.monotonic() + BOUND_S)
        conn.buf = conn.raw = received
        try:
            reply = read_response(conn, head_only=False)
        except AssertionError:
            reply = Reply(None, raw=received)
    reply.elapsed = elapsed
    target.check_secrets(reply.raw)
    return reply, sent, cut

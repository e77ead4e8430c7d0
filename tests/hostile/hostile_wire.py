"""Raw HTTP/1.1 for the hostile corpus: requests built byte by byte, sent on a bare socket
(all at once or trickled), responses read back off the wire, and the seed's HMAC signing with
every signed field overridable for tampering.

Every request of the corpus goes over a raw socket, so that nothing (an HTTP library's
validation, re-encoding or normalisation) smooths over what the client really sends or what
fsup really answers on the wire. This module knows HTTP, not fsup: what an answer must look
like is `hostile_contract.py`, the server under test is `hostile_kit.py`.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from supervisor.core.hmac_auth import sign

# How long a request may take at all before the case fails as "no answer".
NO_ANSWER_S = 20.0
HOSTILE_UA = "fsup-hostile-corpus"

Headers = Sequence[tuple[str, str]] | Mapping[str, str]


@dataclass
class Reply:
    """One HTTP response read off a raw socket (status None: the server closed the connection
    without answering)."""

    status: int | None
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    elapsed: float = 0.0
    raw: bytes = b""
    closed: bool | None = None  # seen closing after the response (None: not watched)
    extra: bytes = b""  # anything the server sent after the first response

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        head = self.raw.split(b"\r\n\r\n", 1)[0][:600]
        return (
            f"status={self.status} after {self.elapsed:.2f}s head={head!r} body={self.body[:300]!r}"
        )


class NoAnswer(AssertionError):
    """The server neither answered nor closed within the bound."""


class Conn:
    """Buffered reads from a socket with one overall deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.eof = False
        self.raw = b""

    def fill(self) -> bool:
        if self.eof:
            return False
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise NoAnswer("fsup did not answer (or close) within the bound")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            data = b""
        except TimeoutError:
            raise NoAnswer("fsup did not answer (or close) within the bound") from None
        if not data:
            self.eof = True
            return False
        self.buf += data
        self.raw += data
        return True

    def until(self, marker: bytes) -> bytes | None:
        while marker not in self.buf:
            if not self.fill():
                return None
        head, _, self.buf = self.buf.partition(marker)
        return head

    def exact(self, count: int) -> bytes | None:
        while len(self.buf) < count:
            if not self.fill():
                return None
        data, self.buf = self.buf[:count], self.buf[count:]
        return data

    def rest(self) -> bytes:
        while self.fill():
            pass
        data, self.buf = self.buf, b""
        return data

    def wait_eof(self, seconds: float) -> bool:
        """True when the server closes within `seconds` (what it sends meanwhile is kept)."""
        self.deadline = time.monotonic() + seconds
        try:
            while self.fill():
                pass
        except NoAnswer:
            return False
        return True


def read_response(conn: Conn, head_only: bool) -> Reply:
    while True:
        head = conn.until(b"\r\n\r\n")
        if head is None:
            return Reply(None, raw=conn.raw)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return Reply(None, reason=f"not an HTTP response: {lines[0][:100]!r}", raw=conn.raw)
        status = int(parts[1])
        headers = [
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:])
        ]
        if 100 <= status < 200 and status != 101:
            continue  # 100 Continue and friends: the final answer follows
        reply = Reply(status, parts[2] if len(parts) > 2 else "", headers)
        break
    kind = (reply.header("content-type") or "").lower()
    if head_only or status in (204, 304):
        pass
    elif "chunked" in (reply.header("transfer-encoding") or "").lower():
        reply.body = _read_chunked(conn, stream="text/event-stream" in kind)
    elif reply.header("content-length") is not None:
        length = int(reply.header("content-length") or "0")
        reply.body = conn.exact(length) or b""
    elif "text/event-stream" in kind:
        reply.body = conn.buf
    else:
        reply.body = conn.rest()
    reply.raw = conn.raw
    return reply


def _read_chunked(conn: Conn, stream: bool) -> bytes:
    body = b""
    if stream:  # an event stream never ends: take what the first moment brings
        conn.deadline = min(conn.deadline, time.monotonic() + 0.5)
        try:
            while b"\n\n" not in body and conn.fill():
                body = conn.buf
        except NoAnswer:
            pass
        return conn.buf
    while True:
        size_line = conn.until(b"\r\n")
        if size_line is None:
            return body
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            conn.until(b"\r\n")  # (no trailers from fsup)
            return body
        body += conn.exact(size) or b""
        conn.until(b"\r\n")


def connect(addr: tuple[str, int], timeout: float = NO_ANSWER_S) -> socket.socket:
    sock = socket.create_connection(addr, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send all of `data`; False when the server closed or reset the connection first."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
        return False
    return True


def exchange(
    addr: tuple[str, int],
    data: bytes | Iterable[tuple[bytes, float]],
    *,
    timeout: float = NO_ANSWER_S,
    head_only: bool = False,
    shut_write: bool = False,
    watch_close: float | None = None,
) -> Reply:
    """Send `data` (bytes, or (piece, pause-after) pairs for a trickle) on a fresh connection
    and read one response. `watch_close`: then wait this long to see whether fsup closes."""
    start = time.monotonic()
    with connect(addr, timeout) as sock:
        pieces = [(data, 0.0)] if isinstance(data, bytes) else data
        for piece, pause in pieces:
            if not send_quietly(sock, piece):
                break
            if pause:
                time.sleep(pause)
        if shut_write:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        conn = Conn(sock, start + timeout)
        reply = read_response(conn, head_only)
        reply.elapsed = time.monotonic() - start
        if watch_close is not None and reply.status is not None:
            reply.closed = conn.wait_eof(watch_close)
            reply.extra = conn.buf
            reply.raw = conn.raw
        return reply


def request_bytes(
    method: str,
    target: str | bytes,
    headers: Headers = (),
    body: bytes = b"",
    *,
    host: str | None = "127.0.0.1",
    version: str = "HTTP/1.1",
    length: bool = True,
) -> bytes:
    """A request on the wire: `target` exactly as given, Host and Content-Length added unless
    the caller sets them (or passes host=None / length=False)."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    names = {name.lower() for name, _ in pairs}
    if host is not None and "host" not in names:
        pairs.insert(0, ("Host", host))
    if length and body and "content-length" not in names and "transfer-encoding" not in names:
        pairs.append(("Content-Length", str(len(body))))
    if "user-agent" not in names:
        pairs.append(("User-Agent", HOSTILE_UA))
    raw_target = target if isinstance(target, bytes) else target.encode("latin-1")
    head = method.encode("latin-1") + b" " + raw_target + b" " + version.encode() + b"\r\n"
    head += b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in pairs)
    return head + b"\r\n" + body


def rfc3339(offset_s: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Signer:
    """The seed's HMAC scheme, with every signed field overridable for tampering."""

    key_id: str
    secret_key: str

    def headers(
        self,
        method: str,
        target: str | bytes,
        body: bytes = b"",
        *,
        timestamp: str | None = None,
        key_id: str | None = None,
        sign_method: str | None = None,
        sign_target: str | bytes | None = None,
        sign_body: bytes | None = None,
        signature: str | None = None,
    ) -> list[tuple[str, str]]:
        stamp = rfc3339() if timestamp is None else timestamp
        path = sign_target if sign_target is not None else target
        raw_path = path if isinstance(path, bytes) else path.encode("latin-1")
        mac = sign(
            self.secret_key,
            sign_method or method,
            raw_path,
            stamp,
            body if sign_body is None else sign_body,
        )
        return [
            ("X-MUXI-Key-ID", self.key_id if key_id is None else key_id),
            ("X-MUXI-Timestamp", stamp),
            ("X-MUXI-Signature", mac if signature is None else signature),
        ]

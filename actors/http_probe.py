"""The HTTP health probe: one GET on loopback, on a connection kept alive between probes.

Why not an HTTP client library: measured on loopback against the stdlib `ThreadingHTTPServer`
the bench runs, an httpx GET cost fsup 1.1 ms of CPU (0.75 ms kept alive); this one costs
0.2 ms on a fresh connection and 0.12 ms on a kept one. The service pays too: 0.42 ms for a
fresh connection (an accept, a thread) against 0.14 ms on a kept one. A probe needs only the
status code, so a request line, three headers and a status line are all there is to it.

Why kept alive only for a while: an answer on an old connection proves the process serves
that connection, not that it still accepts new ones (its accept loop may be wedged while a
handler thread answers). So a connection is used for `REUSE_S` at most; the next probe opens
a fresh one. A connection the service closed meanwhile (its keep-alive timer) is noticed
before the request is sent, or, in a race, the request is sent once more on a new one.
"""

from __future__ import annotations

import errno
import os
import socket

import trio

# Response head and drained body bounds: a health answer is small; anything else is read no
# further, and its connection is not kept.
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
# A kept connection is used for at most this long (see the module's docstring).
REUSE_S = 60.0


class ProbeFailed(Exception):
    """No status came back. `kind` names the failure as HTTP clients do (`ConnectError`,
    `ReadError`, `RemoteProtocolError`), for the operator reading `last_error`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Refused(ProbeFailed):
    """The connect was refused: the program does not listen where fsup looks (another port,
    another address, or not yet). The message says what to do; bounded, and made of the port
    alone, nothing a client sent."""

    def __init__(self, port: int) -> None:
        super().__init__(
            "ConnectError",
            f"nothing listens on 127.0.0.1:{port} (connection refused): "
            f"the program must listen on $PORT ({port})",
        )


class _Connection:
    def __init__(self, raw: socket.socket, port: int) -> None:
        self.raw = raw  # the stdlib socket under `sock`: for the non-blocking peek
        self.sock = trio.socket.from_stdlib_socket(raw)
        self.port = port
        self.opened_at = trio.current_time()

    @classmethod
    async def open(cls, port: int) -> _Connection:
        """Connect to 127.0.0.1:`port`. On loopback the kernel answers a connect at once:
        refused (nobody listens yet, as for most probes of a starting service) costs one
        system call, with no trip through trio's socket machinery."""
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setblocking(False)
        try:
            code = raw.connect_ex(("127.0.0.1", port))
            if code == errno.EINPROGRESS:
                await trio.lowlevel.wait_writable(raw)
                code = raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == errno.ECONNREFUSED:
                raise Refused(port)
            if code:
                raise ProbeFailed("ConnectError", f"[Errno {code}] {os.strerror(code)}")
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            raw.close()
            raise
        return cls(raw, port)

    def reusable(self, port: int) -> bool:
        """Same port, young enough, and nothing pending: a peer that closed shows as a
        readable end of file, and a peer that sent something unasked is not to be trusted."""
        if port != self.port or trio.current_time() - self.opened_at >= REUSE_S:
            return False
        try:
            self.raw.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        """Send `request`; return the final status and whether the connection can be kept."""
        try:
            await self.sock.send(request)  # small: the kernel takes it whole
            while True:
                status, keep = await self._response()
                if status >= 200 or status == 101:
                    return status, keep
        except OSError as exc:
            raise ProbeFailed("ReadError", str(exc)) from None

    async def _response(self) -> tuple[int, bool]:
        head = bytearray()
        while (end := head.find(b"\r\n\r\n")) < 0:
            if len(head) > MAX_HEAD_BYTES:
                raise ProbeFailed("RemoteProtocolError", "response head too large")
            chunk = await self.sock.recv(65536)
            if not chunk:
                raise ProbeFailed(
                    "RemoteProtocolError" if head else "ReadError",
                    "Server disconnected without sending a response.",
                )
            head += chunk
        rest = bytes(head[end + 4 :])
        lines = bytes(head[:end]).split(b"\r\n")
        version, _, tail = lines[0].partition(b" ")
        code = tail[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProbeFailed("RemoteProtocolError", f"malformed status line {lines[0][:80]!r}")
        status = int(code)
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if colon:
                headers[name.strip().lower()] = value.strip().lower()
        tokens = {t.strip() for t in headers.get(b"connection", b"").split(b",")}
        keep = b"close" not in tokens and (version == b"HTTP/1.1" or b"keep-alive" in tokens)
        return status, keep and await self._drain(status, headers, rest)

    async def _drain(self, status: int, headers: dict[bytes, bytes], rest: bytes) -> bool:
        """Read the body off a connection worth keeping; False when it is not worth it (a
        body framed by the end of the connection, chunked, or large)."""
        if status < 200 or status in (204, 304):
            return not rest
        length = headers.get(b"content-length", b"")
        if b"transfer-encoding" in headers or not length.isdigit():
            return False
        size = int(length)
        if size > MAX_BODY_BYTES:
            return False
        body = len(rest)
        while body < size:
            chunk = await self.sock.recv(65536)
            if not chunk:
                return False
            body += len(chunk)
        return body == size


class HttpProbe:
    """GET http://127.0.0.1:<port><path> must answer 2xx."""

    def __init__(self, path: str, timeout: float) -> None:
        self._path = path
        self._timeout = timeout
        self._connection: _Connection | None = None

    def _request(self, port: int) -> bytes:
        return (
            f"GET {self._path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "User-Agent: fsup-health\r\nAccept: */*\r\n\r\n"
        ).encode("latin-1")

    async def check(self, port: int) -> str | None:
        try:
            with trio.fail_after(self._timeout):
                status = await self._get(port)
        except trio.TooSlowError:
            self.close()
            return f"GET {self._path}: Timeout no answer within {self._timeout:g}s"
        except Refused as exc:
            self.close()
            return f"GET {self._path}: {exc}"  # it says what went wrong: no kind needed
        except ProbeFailed as exc:
            self.close()
            return f"GET {self._path}: {exc.kind} {exc}".strip()
        if 200 <= status < 300:
            return None
        return f"GET {self._path} answered {status}"

    async def _get(self, port: int) -> int:
        request = self._request(port)
        kept = self._connection
        if kept is not None and not kept.reusable(port):
            self.close()
            kept = None
        if kept is not None:
            try:
                return await self._exchange(kept, request)
            except ProbeFailed:
                self.close()  # closed under us as we sent: once more, on a new connection
        self._connection = await _Connection.open(port)
        return await self._exchange(self._connection, request)

    async def _exchange(self, connection: _Connection, request: bytes) -> int:
        status, keep = await connection.exchange(request)
        if not keep:
            self.close()
        return status

    def close(self) -> None:
        """Close the kept connection, if any (the watcher closes it when it ends)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


async def connect_once(port: int) -> None:
    """Open a TCP connection to 127.0.0.1:`port` and close it (the TCP probe); raises
    `ProbeFailed`."""
    connection = await _Connection.open(port)
    connection.close()

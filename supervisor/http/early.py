"""fsup's port, bound the moment `fsup serve` starts, and `/health` answered while it loads.

The contract says `fsup serve` waits for nothing: `GET /health` answers as soon as it listens.
Loading the server (trio, Hypercorn, Quart, the actors) takes most of a second on a busy
machine; the socket is bound before any of that, with the standard library alone, and a
thread answers `GET /health` and `GET /ping` from it (issue 11: within 0.3 s of launch).
Every other connection is accepted and kept, its bytes unread, and handed to the server once
it runs, which serves it as if it had accepted it itself: nothing is refused or answered
differently while fsup loads, it only waits.

Only a request line that arrives whole in the first segment, for exactly `/health` or `/ping`
with `GET`, is answered here (and its connection closed); anything else, however odd, is the
server's to judge.
"""

from __future__ import annotations

import select
import socket
import threading

# The early answers: the app's own bodies (`app.health`, `app.ping`).
ANSWERS = {
    b"/health": b'{"status":"healthy"}\n',
    b"/ping": b'{"message":"pong"}\n',
}
MAX_KEPT = 1000  # connections held for the server at most; later ones wait in the backlog
PEEK_BYTES = 1024
PEEK_WAIT_S = 0.2
POLL_S = 0.02


class EarlyListener:
    def __init__(self, host: str, port: int, backlog: int = 100) -> None:
        """Bind and listen now, as Hypercorn binds `host:port` (an `OSError` here is the
        server's: the port is taken, the address is not this machine's)."""
        host = host.strip("[]")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        self.socket = sock
        self.answered = 0
        self._kept: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fsup-early", daemon=True)

    @property
    def held(self) -> int:
        """Connections kept for the server so far: with `answered`, what became of every
        connection accepted (a test waits on both to know the thread has seen them all)."""
        return len(self._kept)

    def start(self) -> EarlyListener:
        self._thread.start()
        return self

    def hand_over(self) -> list[socket.socket]:
        """Stop answering; the connections kept for the server (non-blocking, unread)."""
        self._stop.set()
        self._thread.join()
        kept, self._kept = self._kept, []
        for conn in kept:
            conn.setblocking(False)
        return kept

    def close(self) -> None:
        """The server never ran: close everything."""
        for conn in self.hand_over():
            conn.close()
        self.socket.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if len(self._kept) >= MAX_KEPT:
                self._stop.wait(POLL_S)
                continue
            try:
                ready, _, _ = select.select([self.socket], [], [], POLL_S)
                if not ready:
                    continue
                conn, _ = self.socket.accept()
            except OSError:
                continue
            if not self._answer(conn):
                self._kept.append(conn)

    def _answer(self, conn: socket.socket) -> bool:
        """Answer `GET /health` or `GET /ping` and close; False leaves `conn` untouched."""
        try:
            conn.settimeout(PEEK_WAIT_S)
            head = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
        except OSError:
            return False
        line, found, _ = head.partition(b"\r\n")
        parts = line.split(b" ")
        if not found or len(parts) != 3 or parts[0] != b"GET" or parts[1] not in ANSWERS:
            return False
        if not parts[2].startswith(b"HTTP/1.") or b"\r\n\r\n" not in head:
            return False  # not HTTP/1, or the rest of the head is still coming
        lower = head.lower()
        if b"\ncontent-length:" in lower or b"\ntransfer-encoding:" in lower:
            return False  # a body to read: the server's
        body = ANSWERS[parts[1]]
        try:
            conn.recv(head.index(b"\r\n\r\n") + 4)  # what was peeked: the whole head
            conn.sendall(
                b"HTTP/1.1 200 \r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
            self.answered += 1  # before the close: a client that saw the answer sees it counted
        except OSError:
            pass
        finally:
            conn.close()
        return True

"""A connection to the keeper: who may connect, and the answers waiting to be sent.

The keeper never blocks on a client: its sockets are non-blocking, and what the kernel does not
take at once waits in the connection's outbox (with its fds) until the socket is writable. A
client that stops reading while its outbox grows past `MAX_OUTBOX` messages is dropped rather
than let the keeper's memory grow or its pipes wait: the logs matter more than one client.
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

from supervisor.runtime.keeper import protocol

MAX_OUTBOX: Final = 10_000
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of `sock` (SO_PEERCRED, as it connected)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
    _pid, uid, _gid = _CREDENTIALS.unpack(raw)
    return int(uid)


def admits(peer: int, own: int) -> bool:
    """Whether a peer of uid `peer` may talk to a keeper running as `own`: only the same user.

    The abstract namespace has no file permissions, so any local user can connect; a pipe
    added by another user would let them write into this user's log folders, and `list`
    would hand them this user's children's pipes. root is no exception: a root fsup runs
    its own keeper (the socket name is per home).
    """
    return peer == own


class Client:
    """One connected client: its socket and what waits to be sent to it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._outbox: deque[tuple[bytes, Sequence[int]]] = deque()

    @property
    def waiting(self) -> int:
        """Messages not sent yet."""
        return len(self._outbox)

    def queue(self, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
        """Queue `message` with `fds` (which the outbox now owns: closed once sent)."""
        self._outbox.append((protocol.encode(message), fds))

    def send_queued(self) -> bool:
        """Send what the socket takes now; True when the outbox is empty. OSError (the peer
        is gone) is the caller's to handle."""
        while self._outbox:
            data, fds = self._outbox[0]
            try:
                self.sock.sendmsg([data], protocol.ancillary(fds))
            except BlockingIOError:
                return False
            self._outbox.popleft()
            protocol.close_all(fds)
        return True

    def close(self) -> None:
        """Close the socket and every fd still waiting in the outbox."""
        for _, fds in self._outbox:
            protocol.close_all(fds)
        self._outbox.clear()
        self.sock.close()

"""The log keeper's wire protocol: its socket's name, its messages, and how fds travel.

One keeper serves one fsup home. It listens on an AF_UNIX SOCK_SEQPACKET socket in Linux's
abstract namespace (no path-length limit, no file to clean up after a crash), named from the
home's resolved path. A datagram is one message: a JSON object in UTF-8 of at most
`MAX_MESSAGE` bytes, with file descriptors beside it in SCM_RIGHTS (at most `MAX_FDS`).

Requests (fsup -> keeper), each answered in order on the same connection by
`{"ok": true, ...}` or `{"ok": false, "error": "<why>"}`:

- `OP_ADD`: `{"op": "add", "key", "dir", "name", "max_bytes", "backups"}` + 2 fds (the read
  ends of the child's stdout and stderr pipes, in that order).
- `OP_FLUSH`: `{"op": "flush", "key"}`: write what the pipes already hold (partial lines stay).
- `OP_LIST`: `{"op": "list", "after"}`: the pairs held that were added after the one
  numbered `after` (0 for the first page, then the last answer's `after`), at most
  `LIST_PAGE` (and as many as fit in one message), each with a duplicate of its 2 fds; the
  answer says `more` and the `after` to ask with next.

Events (keeper -> every client, between answers): `{"event": "closed", "key"}` once both pipes
of `key` reached EOF and everything was written.

The keeper uses `send`/`recv` on non-blocking sockets; fsup's trio client reuses
`socket_name`, `encode`, `ancillary` (for `sendmsg`) and `received_fds` and `unpack` (for
`recvmsg(MAX_MESSAGE + 1, ANCILLARY_SIZE)`) with trio's socket.
Stdlib only: the keeper imports nothing of fsup's but this package and `supervisor.core.cri`.
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import select
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

# A message's JSON is at most this many bytes: a request never needs more, and a reader's
# buffer of MAX_MESSAGE + 1 tells a too-long datagram (MSG_TRUNC) from a full one.
MAX_MESSAGE: Final = 64 * 1024
# Fds in one message: a `list` page of LIST_PAGE pairs carries 2 each. Linux's own cap is 253.
LIST_PAGE: Final = 100
MAX_FDS: Final = 2 * LIST_PAGE
# Bounds of an `add`'s fields (so that any pair held fits in a `list` answer).
MAX_KEY: Final = 256
MAX_DIR: Final = 4096
MAX_NAME: Final = 200
MAX_BACKUPS: Final = 1000

OP_ADD: Final = "add"
OP_FLUSH: Final = "flush"
OP_LIST: Final = "list"
OPS: Final = (OP_ADD, OP_FLUSH, OP_LIST)
EVENT_CLOSED: Final = "closed"

SOCKET_PREFIX: Final = b"\0fsup-logkeeper-"
# The ancillary buffer a reader needs for MAX_FDS descriptors.
ANCILLARY_SIZE: Final = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


class ProtocolError(Exception):
    """A message that breaks the protocol: too long, not JSON, not an object, truncated."""


def socket_name(home: Path) -> bytes:
    """The keeper's abstract socket name for `home` (the leading NUL makes it abstract).

    Hashed from the resolved path, so the same home reached through a symlink or a relative
    path names the same keeper; 24 hex digits (96 bits) make a clash between homes moot.
    """
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:24]
    return SOCKET_PREFIX + digest.encode()


def encode(message: Mapping[str, Any]) -> bytes:
    """`message` as one datagram's bytes; ProtocolError when over MAX_MESSAGE."""
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes (at most {MAX_MESSAGE})")
    return data


def decode(data: bytes) -> dict[str, Any]:
    """One datagram's bytes as a message (a JSON object); ProtocolError otherwise."""
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of over {MAX_MESSAGE} bytes")
    try:
        message = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(f"not JSON: {error}") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message


def ancillary(fds: Sequence[int]) -> list[tuple[int, int, bytes]]:
    """The SCM_RIGHTS ancillary data that carries `fds` (for `sendmsg`)."""
    if not fds:
        return []
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def received_fds(ancdata: Iterable[tuple[int, int, bytes]]) -> list[int]:
    """The fds in `recvmsg`'s ancillary data; the caller owns (and must close) them."""
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            whole = len(data) - len(data) % fds.itemsize
            fds.frombytes(data[:whole])
    return list(fds)


def close_all(fds: Iterable[int]) -> None:
    """Close every fd of `fds`, ignoring those already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def send(sock: socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    """Send `message` with `fds` as one datagram. Blocks on a blocking socket; on a
    non-blocking one raises BlockingIOError when the peer's queue is full (nothing sent).
    The caller keeps its `fds` (the kernel passes duplicates)."""
    sock.sendmsg([encode(message)], ancillary(fds))


def _peer_hung_up(sock: socket.socket) -> bool:
    """Whether the peer closed: a SEQPACKET socket reads 0 bytes both at EOF and for an
    empty datagram, and only poll's hang-up flags tell them apart."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP)
    return any(events & (select.POLLRDHUP | select.POLLHUP) for _, events in poller.poll(0))


def recv(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and its fds, or `(None, [])` when the peer closed the connection.

    A message that fails to decode (too long, truncated fds, not a JSON object) raises
    ProtocolError after its fds are closed: a bad message never leaks descriptors.
    """
    data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE + 1, ANCILLARY_SIZE)
    fds = received_fds(ancdata)
    if not data and not fds and _peer_hung_up(sock):
        return None, []
    return unpack(data, fds, flags), fds


def unpack(data: bytes, fds: list[int], flags: int) -> dict[str, Any]:
    """The message of one `recvmsg(MAX_MESSAGE + 1, ANCILLARY_SIZE)` (its bytes, its fds by
    `received_fds`, its flags); on ProtocolError the fds are closed. For a client on trio:
    the keeper never sends an empty datagram, so there 0 bytes and no fds is the end."""
    try:
        if not data:
            raise ProtocolError("empty message")
        if flags & socket.MSG_CTRUNC:
            raise ProtocolError(f"fds cut short: more than {MAX_FDS}, or the keeper is out of fds")
        if flags & socket.MSG_TRUNC:
            raise ProtocolError(f"message of over {MAX_MESSAGE} bytes")
        return decode(data)
    except ProtocolError:
        close_all(fds)
        raise

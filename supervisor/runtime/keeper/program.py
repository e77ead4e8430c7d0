"""The keeper's loop: one selector over its listening socket, its clients and every pipe.

Each wake-up reads each ready pipe once (64 KiB at most: a flood on one pipe cannot starve the
others), stamps the read with `time.time_ns()` taken as it returns, and appends the whole
lines to the version's file at once; then it answers the clients' requests and writes the
tails that waited HOLD_NS. Nothing blocks but the select: pipes and sockets are non-blocking,
answers wait in their client's outbox. Anything a client sends is checked before it is acted
on, and an unexpected error in one callback is told to the diagnostics and the loop goes on:
a keeper that ends takes the children's logs with it.
"""

from __future__ import annotations

import array
import fcntl
import os
import selectors
import socket
import stat
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from supervisor.core import cri
from supervisor.runtime.keeper import protocol, requests
from supervisor.runtime.keeper.clients import MAX_OUTBOX, Client, admits, peer_uid
from supervisor.runtime.keeper.files import Diagnose, LogFile, LogFiles
from supervisor.runtime.keeper.lines import LineAssembler

READ_SIZE: Final = 64 * 1024
# With no client ever connected, the keeper ends after this many seconds (fsup died first).
FIRST_CLIENT_WAIT: Final = 10.0

Answer = tuple[dict[str, Any], list[int]]


class Stream:
    """One pipe's read end. It stays open after EOF until its pair closes, so that `list` can
    still hand a duplicate of it (a new keeper reads the EOF at once)."""

    __slots__ = ("fd", "assembler", "open")

    def __init__(self, fd: int, stream: str) -> None:
        self.fd = fd
        self.assembler = LineAssembler(stream)
        self.open = True


class Pair:
    """A process's stdout and stderr pipes, written into one version's file."""

    __slots__ = ("request", "file", "streams", "seq")

    def __init__(self, request: requests.Add, file: LogFile, fds: list[int], seq: int) -> None:
        self.seq = seq  # its place in the order of adds: `list`'s cursor
        self.request = request
        self.file = file
        self.streams = (Stream(fds[0], cri.STREAMS[0]), Stream(fds[1], cri.STREAMS[1]))

    def describe(self) -> dict[str, Any]:
        """The pair as `list` shows it."""
        add = self.request
        return {
            "key": add.key,
            "dir": add.directory,
            "name": add.name,
            "max_bytes": add.max_bytes,
            "backups": add.backups,
        }


class Keeper:
    """The keeper's state and loop: pairs by key, clients by fd, files by (dir, version)."""

    def __init__(
        self,
        listener: socket.socket,
        diagnose: Diagnose,
        *,
        first_client_wait: float = FIRST_CLIENT_WAIT,
    ) -> None:
        self.listener = listener
        self.diagnose = diagnose
        self.selector = selectors.DefaultSelector()
        self.pairs: dict[str, Pair] = {}  # in the order they were added
        self.added = 0  # pairs ever added: the next one's `seq`
        self.clients: dict[int, Client] = {}
        self.files = LogFiles()
        self.pending: dict[Stream, Pair] = {}
        self.inodes: dict[tuple[int, int], str] = {}  # the pipes held, by (st_dev, st_ino)
        self.started = time.monotonic_ns()
        self.first_client_ns = int(first_client_wait * 1e9)
        self.ever_connected = False
        self.own_uid = os.geteuid()
        self.accept_again: int | None = None  # when accepting paused after an error
        self.selector.register(listener, selectors.EVENT_READ, self._accept)

    def run(self) -> None:
        """Serve until nothing is left to keep (see `finished`)."""
        while True:
            for key, mask in self.selector.select(self._timeout()):
                self._dispatch(key.data, mask)
            self._write_due(time.time_ns())
            self._resume_accepting()
            if self.finished():
                break
        self.close()

    def _dispatch(self, callback: Callable[[int], None], mask: int) -> None:
        try:
            callback(mask)
        except Exception:
            import traceback  # only here: it costs the keeper's memory otherwise

            self.diagnose("unexpected error, going on:\n" + traceback.format_exc().rstrip())

    def _resume_accepting(self) -> None:
        if self.accept_again is not None and time.monotonic_ns() >= self.accept_again:
            self.accept_again = None
            self.selector.register(self.listener, selectors.EVENT_READ, self._accept)

    def _timeout(self) -> float | None:
        deadlines = [s.assembler.deadline() or 0 for s in self.pending]
        timeout = (min(deadlines) - time.time_ns()) / 1e9 if deadlines else None
        if self.accept_again is not None:
            again = (self.accept_again - time.monotonic_ns()) / 1e9
            timeout = again if timeout is None else min(timeout, again)
        if not self.ever_connected:
            first = (self.started + self.first_client_ns - time.monotonic_ns()) / 1e9
            timeout = first if timeout is None else min(timeout, first)
        return None if timeout is None else max(timeout, 0.0)

    def finished(self) -> bool:
        """No pipe held and no client connected, and a client came once (or none came in
        first_client_wait seconds). A connection already waiting is taken first: it is a new fsup."""
        if self.pairs or self.clients:
            return False
        if not self.ever_connected and time.monotonic_ns() - self.started < self.first_client_ns:
            return False
        if self.accept_again is None:
            self._accept(selectors.EVENT_READ)
        return not self.clients

    def close(self) -> None:
        """Close everything (at exit)."""
        for client in list(self.clients.values()):
            self._drop(client, None)
        for pair in list(self.pairs.values()):
            protocol.close_all(stream.fd for stream in pair.streams)
        self.files.close_all()
        self.selector.close()
        self.listener.close()

    # Clients

    def _accept(self, mask: int) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        except OSError as error:
            # Out of fds (EMFILE): the connection stays queued and the listener readable, so
            # stop listening for a second rather than spin.
            self.diagnose(f"accept failed: {error}; accepting again in 1 s")
            self.selector.unregister(self.listener)
            self.accept_again = time.monotonic_ns() + 1_000_000_000
            return
        uid = peer_uid(sock)
        if not admits(uid, self.own_uid):
            self.diagnose(f"refused a client of uid {uid}")
            sock.close()
            return
        sock.setblocking(False)
        client = Client(sock)
        self.clients[sock.fileno()] = client
        self.ever_connected = True
        self.selector.register(sock, selectors.EVENT_READ, lambda m: self._on_client(client, m))

    def _on_client(self, client: Client, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._send(client)
        if mask & selectors.EVENT_READ and client.sock.fileno() in self.clients:
            self._receive(client)

    def _receive(self, client: Client) -> None:
        try:
            message, fds = protocol.recv(client.sock)
        except BlockingIOError:
            return
        except protocol.ProtocolError as error:
            self._reply(client, ({"ok": False, "error": str(error)}, []))
            return
        except OSError as error:
            self._drop(client, f"receive failed: {error}")
            return
        if message is None:
            self._drop(client, None)
            return
        self._reply(client, self._answer(message, fds))

    def _answer(self, message: dict[str, Any], fds: list[int]) -> Answer:
        try:
            request = requests.parse(message, len(fds))
            if isinstance(request, requests.Add):
                return self._add(request, fds)
            protocol.close_all(fds)
            if isinstance(request, requests.Flush):
                return self._flush(request.key)
            return self._list(request.after)
        except requests.RequestError as error:
            protocol.close_all(fds)
            return {"ok": False, "error": str(error)}, []
        except Exception as error:  # a bug or the system's limits: answer all the same
            import traceback

            self.diagnose("request failed:\n" + traceback.format_exc().rstrip())
            return {"ok": False, "error": f"internal error: {error!r}"}, []

    def _reply(self, client: Client, answer: Answer) -> None:
        client.queue(*answer)
        self._send(client)

    def _send(self, client: Client) -> None:
        """Send what the client's outbox holds; watch for writability while some waits."""
        try:
            done = client.send_queued()
        except OSError as error:
            self._drop(client, f"send failed: {error}")
            return
        if not done and client.waiting > MAX_OUTBOX:
            self._drop(client, f"dropped: over {MAX_OUTBOX} messages unread")
            return
        events = selectors.EVENT_READ | (0 if done else selectors.EVENT_WRITE)
        self.selector.modify(client.sock, events, self.selector.get_key(client.sock).data)

    def _drop(self, client: Client, why: str | None) -> None:
        if why:
            self.diagnose(f"client: {why}")
        self.clients.pop(client.sock.fileno(), None)
        self.selector.unregister(client.sock)
        client.close()

    def _broadcast(self, message: dict[str, Any]) -> None:
        for client in list(self.clients.values()):
            self._reply(client, (message, []))

    # Requests

    def _add(self, add: requests.Add, fds: list[int]) -> Answer:
        if add.key in self.pairs:
            raise requests.RequestError(f"key {add.key!r} is already held")
        pipes = [os.fstat(fd) for fd in fds]
        if not all(stat.S_ISFIFO(info.st_mode) for info in pipes):
            raise requests.RequestError("the fds must be pipes")
        # Another end of a pipe already held (a client re-adding what `list` gave it): two
        # readers would split its lines between them.
        inodes = [(info.st_dev, info.st_ino) for info in pipes]
        if inodes[0] == inodes[1]:
            raise requests.RequestError("stdout and stderr must be two pipes")
        for inode in inodes:
            if inode in self.inodes:
                raise requests.RequestError(f"a pipe already held by {self.inodes[inode]!r}")
        try:
            log_file = self.files.acquire(
                Path(add.directory), add.name, add.max_bytes, add.backups, self.diagnose
            )
        except OSError as error:
            raise requests.RequestError(f"cannot open the log file: {error}") from None
        self.added += 1
        pair = self.pairs[add.key] = Pair(add, log_file, fds, self.added)
        self.inodes.update({inode: add.key for inode in inodes})
        for stream in pair.streams:
            os.set_blocking(stream.fd, False)
            self.selector.register(stream.fd, selectors.EVENT_READ, self._reader(pair, stream))
        return {"ok": True}, []

    def _reader(self, pair: Pair, stream: Stream) -> Callable[[int], None]:
        def on_readable(mask: int) -> None:
            self._read(pair, stream)

        return on_readable

    def _flush(self, key: str) -> Answer:
        pair = self.pairs.get(key)
        if pair is not None:
            for stream in pair.streams:
                self._drain(pair, stream)
        return {"ok": True}, []

    def _drain(self, pair: Pair, stream: Stream) -> None:
        """Read what `stream` holds now, not more: a writer that never pauses must not keep
        the keeper (and its other pipes) here."""
        left = _readable(stream.fd) if stream.open else 0
        if left == 0 and stream.open:
            # Nothing waits: one read tells an end of stream (the process is gone and its last
            # unfinished line must be written now, for its exit's tail) from a quiet writer.
            self._read(pair, stream)
            return
        while left > 0 and stream.open:
            got = self._read(pair, stream)
            if got <= 0:
                return
            left -= got

    def _list(self, after: int) -> Answer:
        """The pairs added after the one numbered `after` (0: from the first). A cursor, not
        an offset: a pair that closes between two pages shifts no other out of the next."""
        later = [pair for pair in self.pairs.values() if pair.seq > after]
        pairs = later[: protocol.LIST_PAGE]
        room = protocol.MAX_MESSAGE - 64
        shown: list[dict[str, Any]] = []
        for pair in pairs:
            entry = pair.describe()
            room -= len(protocol.encode(entry)) + 1
            if room < 0:
                break
            shown.append(entry)
        fds: list[int] = []
        try:
            for pair in pairs[: len(shown)]:
                fds += [os.dup(pair.streams[0].fd), os.dup(pair.streams[1].fd)]
        except OSError as error:
            protocol.close_all(fds)
            raise requests.RequestError(f"cannot duplicate the fds: {error}") from None
        more = len(shown) < len(later)
        cursor = pairs[len(shown) - 1].seq if shown else after
        return {"ok": True, "pipes": shown, "more": more, "after": cursor}, fds

    # Pipes

    def _read(self, pair: Pair, stream: Stream) -> int:
        """Read `stream` once and write what it completes; the bytes read (-1: nothing yet)."""
        try:
            data = os.read(stream.fd, READ_SIZE)
        except BlockingIOError:
            return -1
        except OSError as error:
            self.diagnose(f"{pair.request.key}: read failed ({error}), taken as its end")
            data = b""
        if not data:
            self._end_stream(pair, stream)
            return 0
        self._write(pair, stream.assembler.feed(data, time.time_ns()))
        self._track(pair, stream)
        return len(data)

    def _write(self, pair: Pair, data: bytes) -> None:
        if data:
            pair.file.write(data, self.diagnose)

    def _track(self, pair: Pair, stream: Stream) -> None:
        if stream.assembler.pending:
            self.pending[stream] = pair
        else:
            self.pending.pop(stream, None)

    def _write_due(self, now_ns: int) -> None:
        for stream, pair in list(self.pending.items()):
            self._write(pair, stream.assembler.due(now_ns))
            self._track(pair, stream)

    def _end_stream(self, pair: Pair, stream: Stream) -> None:
        self._write(pair, stream.assembler.finish())
        self._track(pair, stream)
        stream.open = False
        self.selector.unregister(stream.fd)
        if not any(s.open for s in pair.streams):
            self._close_pair(pair)

    def _close_pair(self, pair: Pair) -> None:
        for stream in pair.streams:
            info = os.fstat(stream.fd)
            self.inodes.pop((info.st_dev, info.st_ino), None)
        protocol.close_all(stream.fd for stream in pair.streams)
        self.files.release(pair.file)
        del self.pairs[pair.request.key]
        self._broadcast({"event": protocol.EVENT_CLOSED, "key": pair.request.key})


def _readable(fd: int) -> int:
    """Bytes waiting in the pipe `fd` now (FIONREAD)."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]

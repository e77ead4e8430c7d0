"""fsup's side of the home's log keeper: hand it each child's pipes, keep their read ends.

The keeper (`supervisor.runtime.keeper`, its own process in its own session) reads every
formation process's stdout and stderr, stamps each line and writes it to the file of the
process's version (`supervisor.core.cri`). fsup keeps a duplicate of each pipe's read end (the
"fd store" of systemd, the attach socket of conmon): a pipe stays open while either holds it, so
the keeper can die without a child's next write failing, and fsup can die (SIGKILL, SIGSTOP)
without a child blocking or a line being lost, since the keeper reads on.

- `capture` makes the two pipes of a process about to start, gives the read ends to the
  keeper, keeps its own, and returns the write ends for the child.
- When the keeper dies while fsup is up, a new one is started and given every pair fsup holds;
  what waited in the pipes meanwhile (64 KiB each: a child that writes more waits the tenth
  of a second a new keeper takes) is stamped when the new keeper reads it.
- When fsup starts while a keeper runs (fsup was killed), it takes its duplicates back (`list`).
- `closed` (both pipes of a pair at EOF, all written) lets fsup close its duplicates.

One connection, requests one at a time (answers come in order); a task reads the connection
and hands each answer to the request waiting for it.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from supervisor.runtime.keeper import protocol
from supervisor.storage.formation_logs import LogLimits

log = logging.getLogger("fsup.logs")

ANSWER_BOUND_S = 5.0  # a keeper answers in microseconds; this bounds a wedged one
START_BOUND_S = 10.0  # a new keeper's interpreter start, on a loaded machine
ESTABLISH_BOUND_S = 30.0  # a keeper that accepts but never answers (stopped) is given up
CONNECT_TRIES, CONNECT_PAUSE_S = 3, 0.05  # a keeper ending just as fsup connects
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0
# What a failed connection or take-back can raise (a keeper's answer of the wrong shape too).
ESTABLISH_ERRORS = (
    OSError,
    EOFError,
    protocol.ProtocolError,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    trio.TooSlowError,
)  # pauses between attempts while no keeper can be had
# Markers a formation's processes carry: the keeper must not look like one (strays are found
# by them and killed).
NOT_INHERITED = ("MUXI_HOME", "FORMATION_ID", "FORMATION_VERSION", "PORT")


class KeeperUnavailable(OSError):
    """The keeper could not be reached or refused a request: the caller falls back."""


@dataclass
class Held:
    """A pair fsup holds the read ends of, and how the keeper is to write it."""

    key: str
    add: dict[str, Any]  # the `add` request that gives the pair to a keeper
    fds: tuple[int, int]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@dataclass
class Capture:
    """The write ends for one child (fds 1 and 2); the caller closes them after the spawn."""

    key: str
    stdout: int
    stderr: int


class LogKeeper:
    """The connection to the keeper of one home, and the read ends fsup holds."""

    def __init__(self, home: Path, limits: LogLimits) -> None:
        self.home = home
        self.limits = limits
        self.held: dict[str, Held] = {}
        self._key_of_inode: dict[int, str] = {}  # each held pipe's inode (adoption finds it)
        self.spawned = 0  # keepers this fsup started (the tests and the log read it)
        self.unavailable: str | None = None  # why no keeper can be had, while it lasts
        self._sock: trio.socket.SocketType | None = None
        self._connected = trio.Event()
        self._lock = trio.Lock()
        self._waiting: deque[trio.MemorySendChannel[dict[str, Any]]] = deque()

    # -- the requests ---------------------------------------------------------------------

    async def capture(self, log_dir: Path, version: str) -> Capture:
        """Two pipes for a child about to start, their read ends given to the keeper."""
        fds: list[int] = []
        try:
            fds.extend(os.pipe2(os.O_CLOEXEC))
            fds.extend(os.pipe2(os.O_CLOEXEC))
        except OSError:
            protocol.close_all(fds)
            raise
        out_r, out_w, err_r, err_w = fds
        key = uuid.uuid4().hex
        add = {
            "op": protocol.OP_ADD,
            "key": key,
            "dir": str(log_dir),
            "name": version,
            "max_bytes": self.limits.max_bytes,
            "backups": self.limits.backups,
        }
        try:
            await self._request(add, (out_r, err_r))
        except BaseException:
            protocol.close_all(fds)
            raise
        self._hold(Held(key, add, (out_r, err_r)))
        return Capture(key, out_w, err_w)

    async def flush(self, key: str) -> None:
        """Have the keeper write what it has read of `key`'s pipes (it answers once written)."""
        await self._request({"op": protocol.OP_FLUSH, "key": key})

    async def _request(self, message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        if self.unavailable is not None:
            raise KeeperUnavailable(self.unavailable)
        with trio.fail_after(ANSWER_BOUND_S):
            await self._connected.wait()
            async with self._lock:
                sock = self._sock
                if sock is None:
                    raise KeeperUnavailable("the log keeper is restarting")
                send, receive = trio.open_memory_channel[dict[str, Any]](1)
                self._waiting.append(send)
                try:
                    await _send(sock, message, fds)
                except BaseException as exc:
                    # Nothing was sent (a cancelled sendmsg sends nothing): no answer comes.
                    self._waiting.remove(send)
                    if isinstance(exc, OSError | protocol.ProtocolError):
                        raise KeeperUnavailable(f"the log keeper is gone: {exc}") from None
                    raise
                # Cancelled while waiting, the slot stays: the answer still comes, in order,
                # and is dropped (`_read`), so the next request gets its own.
                async with receive:
                    try:
                        answer = await receive.receive()
                    except trio.EndOfChannel:
                        raise KeeperUnavailable("the log keeper went away") from None
        if not answer.get("ok"):
            raise KeeperUnavailable(f"the log keeper refused: {answer.get('error')}")

    def state(self) -> dict[str, Any]:
        """How capture stands, for the status answers: an operator sees at once when output
        goes to the legacy files (no keeper) instead of being stamped."""
        return {
            "connected": self._sock is not None,
            "pipes": 2 * len(self.held),
            "keepers_started": self.spawned,
            "error": self.unavailable,
        }

    def key_of_pipe(self, inode: int) -> str | None:
        """The key of the pair one of whose pipes is `inode` (an adopted child's stderr), so
        that its exit can ask the keeper to write what it read (`flush`)."""
        return self._key_of_inode.get(inode)

    def _hold(self, held: Held) -> None:
        self.held[held.key] = held
        for fd in held.fds:
            self._key_of_inode[os.fstat(fd).st_ino] = held.key

    # -- the connection -------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Keep a connection to a keeper for fsup's lifetime: connect (starting one when none
        runs), give it every pair it lacks, read its answers and events; again when it dies.
        While no keeper can be had, requests fail at once (spawns fall back to files) and it
        is tried again after a growing pause."""
        status: trio.TaskStatus[None] = task_status
        pause = RETRY_FIRST_S
        while True:
            try:
                with trio.fail_after(ESTABLISH_BOUND_S):
                    sock = await self._establish()
            except ESTABLISH_ERRORS as exc:
                self._unavailable(exc, pause)
                status.started()
                status = trio.TASK_STATUS_IGNORED
                await trio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            pause = RETRY_FIRST_S
            self.unavailable = None
            self._sock = sock
            self._connected.set()
            status.started()
            status = trio.TASK_STATUS_IGNORED
            try:
                await self._read(sock)
            finally:
                self._connected = trio.Event()
                self._sock = None
                sock.close()
                while self._waiting:
                    self._waiting.popleft().close()
            log.warning("the log keeper went away; starting a new one with the pipes fsup holds")

    def _unavailable(self, exc: BaseException, pause: float) -> None:
        """No keeper can be had for now: say so, where the status answers read it."""
        self.unavailable = (
            f"no log keeper answers for this home ({exc or type(exc).__name__}); "
            f"fsup tries again in {pause:g} s, and {self.home}/server/logkeeper.log "
            "has what a keeper it started said"
        )
        log.error(
            "%s; output of processes started meanwhile goes to stdout.log and stderr.log, "
            "lines without times",
            self.unavailable,
        )

    async def _establish(self) -> trio.socket.SocketType:
        """A connection to a keeper that holds every pair fsup holds. A keeper that was just
        killed may still take a connection into its backlog and then reset it (its listening
        socket closes last), or one may be ending as fsup connects: a few quick tries."""
        for _ in range(CONNECT_TRIES - 1):
            try:
                return await self._establish_once()
            except (OSError, EOFError, protocol.ProtocolError):
                await trio.sleep(CONNECT_PAUSE_S)
        return await self._establish_once()

    async def _establish_once(self) -> trio.socket.SocketType:
        sock = await self._connect_or_start_once()
        try:
            owned = await self._take_back(sock)
            for held in list(self.held.values()):
                if held.key not in owned:
                    await self._give_back(sock, held)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _give_back(self, sock: trio.socket.SocketType, held: Held) -> None:
        """Give a new keeper a pair fsup holds. Refused (its folder cannot be made again, say
        on a full disk), the pair goes to the home's `lost+found` log folder instead, so its
        child's output is still read (a pipe nobody reads fills, and the child blocks); only
        a broken connection means the keeper is gone."""
        try:
            await _roundtrip(sock, held.add, held.fds, self._on_event)
            return
        except KeeperUnavailable as refused:
            log.error("the log keeper refused %s: %s", held.add.get("dir"), refused)
        name = f"{Path(str(held.add.get('dir'))).name}-{held.add.get('name')}"
        held.add = {
            **held.add,
            "dir": str(self.home / "server" / "logs" / "lost+found"),
            "name": name,
        }
        try:
            await _roundtrip(sock, held.add, held.fds, self._on_event)
        except KeeperUnavailable as refused:
            log.error("the log keeper refused %s too: %s", held.add["dir"], refused)

    async def _connect_or_start_once(self) -> trio.socket.SocketType:
        try:
            return await _connect(self.home)
        except OSError:
            pass
        await self._start_keeper()
        return await _connect(self.home)

    async def _take_back(self, sock: trio.socket.SocketType) -> set[str]:
        """The keys the keeper holds; for those fsup does not, keep the duplicates it sends
        (fsup was restarted while the keeper ran)."""
        owned: set[str] = set()
        after = 0
        while True:
            answer, fds = await _roundtrip(
                sock, {"op": protocol.OP_LIST, "after": after}, (), self._on_event
            )
            pipes = answer.get("pipes", [])
            if not isinstance(pipes, list) or len(fds) != 2 * len(pipes):
                protocol.close_all(fds)
                raise protocol.ProtocolError("a list answer whose pipes and fds disagree")
            for index, pipe in enumerate(pipes):
                key, pair = str(pipe["key"]), (fds[2 * index], fds[2 * index + 1])
                owned.add(key)
                if key in self.held:
                    os.close(pair[0])
                    os.close(pair[1])
                else:
                    self._hold(Held(key, {**pipe, "op": protocol.OP_ADD}, pair))
            if not answer.get("more"):
                return owned
            if not isinstance(answer.get("after"), int) or answer["after"] <= after:
                raise protocol.ProtocolError("a list answer whose cursor does not move on")
            after = answer["after"]

    async def _read(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                message, fds = await _receive(sock)
            except (OSError, EOFError, protocol.ProtocolError):
                return
            for fd in fds:  # answers to fsup's requests carry none
                os.close(fd)
            if not self._on_event(message) and self._waiting:
                waiter = self._waiting.popleft()
                try:
                    waiter.send_nowait(message)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # its request was cancelled (a bounded flush, a cancelled spawn)

    def _on_event(self, message: dict[str, Any]) -> bool:
        """Handle an event the keeper sent on its own; False for an answer."""
        if "event" not in message:
            return False
        if message.get("event") == protocol.EVENT_CLOSED:
            held = self.held.pop(str(message.get("key")), None)
            if held is not None:
                for fd in held.fds:
                    self._key_of_inode.pop(os.fstat(fd).st_ino, None)
                held.close()
        return True

    async def _start_keeper(self) -> None:
        """Start a keeper for the home and wait for its word: `ready`, or `busy` when one
        already listens (started meanwhile by someone else: fine, it is connected to)."""
        diagnostics = self.home / "server" / "logkeeper.log"
        said_r, said_w = os.pipe2(os.O_CLOEXEC)
        try:
            with open(diagnostics, "ab") as err:  # noqa: ASYNC230 - a local append, microseconds
                # Through a shell that leaves it in the background and exits: the keeper is
                # then no child of fsup's (init adopts it), so it never waits for one that
                # outlives it, and no zombie stays when it ends while fsup runs.
                process = await trio.lowlevel.open_process(
                    ["/bin/sh", "-c", '"$@" &', "fsup-logkeeper", *self._keeper_argv()],
                    stdin=subprocess.DEVNULL,
                    stdout=said_w,
                    stderr=err,
                    start_new_session=True,  # a Ctrl-C on `fsup serve` does not reach it
                    cwd="/",
                    env={k: v for k, v in os.environ.items() if k not in NOT_INHERITED},
                )
        finally:
            os.close(said_w)
        self.spawned += 1
        async with trio.lowlevel.FdStream(said_r) as said:
            try:
                with trio.fail_after(START_BOUND_S):
                    await process.wait()  # the shell, at once
                    word = await said.receive_some(64)
            except trio.TooSlowError:
                raise KeeperUnavailable("the log keeper did not start in time") from None
        if word.strip() not in (b"ready", b"busy"):
            raise KeeperUnavailable(f"the log keeper did not start: {word[:64]!r}")
        log.info("log keeper started for %s", self.home)

    def _keeper_argv(self) -> list[str]:
        return [sys.executable, "-m", "supervisor.runtime.keeper", "--home", str(self.home)]


@asynccontextmanager
async def open_log_keeper(home: Path, limits: LogLimits) -> AsyncIterator[LogKeeper]:
    """The home's log keeper for as long as the block runs; the keeper outlives it (it ends
    by itself once no pipe and no fsup are left)."""
    keeper = LogKeeper(home, limits)
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.serve)
        try:
            yield keeper
        finally:
            nursery.cancel_scope.cancel()
    for held in keeper.held.values():
        held.close()
    keeper.held.clear()


async def _connect(home: Path) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        await sock.connect(protocol.socket_name(home))
        # The name is in the abstract namespace, which has no permissions: another user could
        # listen on it first and be handed every child's output. Only our own uid is a keeper.
        _pid, uid, _gid = struct.unpack(
            "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        )
        if uid != os.geteuid():
            raise KeeperUnavailable(
                f"the log keeper's socket for {home} is held by uid {uid}, not by this user: "
                "fsup will not hand it any output"
            )
    except BaseException:
        sock.close()
        raise
    return sock


async def _send(
    sock: trio.socket.SocketType, message: dict[str, Any], fds: tuple[int, ...]
) -> None:
    await sock.sendmsg([protocol.encode(message)], protocol.ancillary(fds))


async def _receive(sock: trio.socket.SocketType) -> tuple[dict[str, Any], list[int]]:
    """The next message and its fds (the caller owns them); EOFError once the keeper closed
    (it never sends an empty message)."""
    data, ancdata, flags, _address = await sock.recvmsg(
        protocol.MAX_MESSAGE + 1, protocol.ANCILLARY_SIZE
    )
    fds = protocol.received_fds(ancdata)
    if not data and not fds:
        raise EOFError("the log keeper closed the connection")
    return protocol.unpack(data, fds, flags), fds


async def _roundtrip(
    sock: trio.socket.SocketType,
    message: dict[str, Any],
    fds: tuple[int, ...],
    on_event: Callable[[dict[str, Any]], bool],
) -> tuple[dict[str, Any], list[int]]:
    """One request and its answer while no reader task runs (connecting), events handled."""
    with trio.fail_after(ANSWER_BOUND_S):
        await _send(sock, message, fds)
        while True:
            answer, got = await _receive(sock)
            if not on_event(answer):
                if not answer.get("ok"):
                    for fd in got:
                        os.close(fd)
                    raise KeeperUnavailable(f"the log keeper refused: {answer.get('error')}")
                return answer, got

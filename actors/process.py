"""Child processes: spawn, adopt, wait, stop. The only module that sends signals.

Each formation process starts in its own session (so its process group id is its pid) with
stdout and stderr on pipes held by the home's log keeper (`supervisor.runtime.log_keeper`),
which stamps and writes every line: a child keeps running (and logging) if fsup itself is
killed, so the next fsup can adopt it. Without a keeper (it could not be reached) a child
writes straight to the legacy `stdout.log` and `stderr.log`, lines without times.

We never `waitpid(-1)` and install no SIGCHLD handler: our own children are waited by trio's
`Process.wait`; adopted ones (spawned by an earlier fsup, now children of init) are watched
through a pidfd, which becomes readable when they exit. A pid is only trusted together with
its start time, so a recycled pid is never mistaken for ours.

Stopping is graceful, then hard: the configured signal to the process group and to any
descendant that left the group, a bounded wait, then SIGKILL for the group and every
descendant seen at the start or still there (trio's own cancel delivery kills only the direct
child). What left the tree as well (its parent gone) is a stray of the formation: after a
process exits or is stopped, `StraySweeper` finds it by the environment marker and kills it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import psutil
import trio

from . import proc_table
from .log_source import LogSource
from .proc_table import SharedScan

# After SIGKILL the kernel reaps quickly; this bound only guards against a wedged kernel.
KILL_GRACE_S = 5.0
# The environment marker that ties a process to one fsup home (finds strays after a crash).
HOME_ENV = "MUXI_HOME"
log = logging.getLogger("fsup.process")


class ProcessHandle(Protocol):
    """What a formation actor needs from a process (a fake one in unit tests)."""

    pid: int
    started_at: float

    @property
    def returncode(self) -> int | None: ...

    def alive(self) -> bool: ...

    async def wait(self) -> int | None: ...

    async def stop(self, signum: int, grace: float) -> int | None: ...

    def kill_group(self) -> None: ...

    async def stderr_tail(self) -> str: ...


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


class _Tree:
    """The graceful-then-hard stop shared by own and adopted processes."""

    pid: int
    started_at: float
    log_source: LogSource | None

    def alive(self) -> bool:
        raise NotImplementedError

    async def wait(self) -> int | None:
        raise NotImplementedError

    @property
    def returncode(self) -> int | None:
        raise NotImplementedError

    def _descendants(self, fresh: bool = False) -> list[psutil.Process]:
        """From a process table shared by the stops that begin together (`proc_table`)."""
        return proc_table.descendants(self.pid, fresh)

    async def stop(self, signum: int, grace: float) -> int | None:
        """Stop the process and everything it started, SIGKILL after `grace` seconds; return
        its exit code (None: unknown)."""
        tree = self._descendants()
        self._signal_group(signum)
        for proc in tree:
            _signal_if_outside_group(proc, self.pid, signum)
        with trio.move_on_after(grace):
            await self.wait()
            await _wait_all_gone(tree)
        if self.alive():  # (not reaped: its pid cannot be someone else's yet)
            tree += self._descendants(fresh=True)  # started since (stopped as it starts up)
        self._signal_group(signal.SIGKILL)
        for proc in tree:
            _kill_quietly(proc)
        with trio.move_on_after(KILL_GRACE_S):
            await self.wait()
        return self.returncode

    def kill_group(self) -> None:
        """SIGKILL what is left of the process group after its leader exited."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            # The group is gone and the id now belongs to someone else's group.
            pass

    async def stderr_tail(self) -> str:
        return "" if self.log_source is None else await self.log_source.stderr_tail()


class ChildProcess(_Tree):
    """A process this fsup spawned: waited by trio, exit code known."""

    def __init__(self, process: trio.Process, log_source: LogSource) -> None:
        self._process = process
        self.pid = process.pid
        self.started_at = create_time(process.pid) or 0.0
        self.log_source = log_source

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def alive(self) -> bool:
        return self._process.poll() is None

    async def wait(self) -> int | None:
        return await self._process.wait()


class AdoptedProcess(_Tree):
    """A process an earlier fsup spawned, now a child of init: watched by pidfd, its exit code
    is unknown (its parent reaps it, not us)."""

    def __init__(self, pid: int, started_at: float, log_source: LogSource | None = None) -> None:
        self.pid = pid
        self.started_at = started_at
        self.log_source = log_source
        self._gone = trio.Event()

    @property
    def returncode(self) -> int | None:
        return None

    def alive(self) -> bool:
        if self._gone.is_set():
            return False
        if not _same_process(self.pid, self.started_at):
            self._gone.set()
        return not self._gone.is_set()

    async def wait(self) -> int | None:
        if self.alive():
            await _wait_pid_gone(self.pid, self.started_at)
            self._gone.set()
        return None


def _same_process(pid: int, started_at: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - started_at) < 0.05
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


async def _wait_pid_gone(pid: int, started_at: float | None = None) -> None:
    """Wait (without polling) until `pid` exits, via a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if started_at is not None and not _same_process(pid, started_at):
            return
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


async def _wait_all_gone(tree: list[psutil.Process]) -> None:
    for proc in tree:
        try:
            await _wait_pid_gone(proc.pid, proc.create_time())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue


def _signal_if_outside_group(proc: psutil.Process, pgid: int, signum: int) -> None:
    try:
        if os.getpgid(proc.pid) != pgid and proc.is_running():
            proc.send_signal(signum)
    except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def _kill_quietly(proc: psutil.Process) -> None:
    try:
        proc.kill()  # psutil checks the start time first: never a recycled pid
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def adopt(
    pid: int | None, started_at: float | None, log_source: Callable[[int, float], LogSource]
) -> AdoptedProcess | None:
    """The process recorded for a formation, if it is still the same process."""
    if pid is None or started_at is None or not _same_process(pid, started_at):
        return None
    return AdoptedProcess(pid, started_at, log_source(pid, started_at))


_home_scans: SharedScan[list[tuple[psutil.Process, str]]] = SharedScan()


def processes_of_home(home: Path) -> list[tuple[psutil.Process, str]]:
    """Every live process started for a formation of this fsup home, with its formation id.

    Each /proc/<pid>/environ is read raw and parsed only if it holds this home's marker:
    psutil's `environ()` parsed every process's environment in Python, most of a sweep's
    time, holding the GIL against the event loop (a sweep follows every exit and stop)."""
    home_value = os.fsencode(str(home))
    marker = os.fsencode(HOME_ENV) + b"=" + home_value
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                data = environ.read()
        except OSError:
            continue  # gone, or not ours to read
        if marker not in data:
            continue
        env = dict(item.split(b"=", 1) for item in data.split(b"\0") if b"=" in item)
        formation_id = env.get(b"FORMATION_ID")
        if env.get(os.fsencode(HOME_ENV)) != home_value or formation_id is None:
            continue
        try:
            proc = psutil.Process(int(name))
        except psutil.Error:
            continue
        found.append((proc, os.fsdecode(formation_id)))
    return found


def kill_stray(proc: psutil.Process) -> None:
    """SIGKILL a process (and its group) that no formation owns."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _kill_quietly(proc)


def scan_home(home: Path) -> list[tuple[psutil.Process, str]]:
    """`processes_of_home`, from a scan begun after this call (shared by the sweeps that queue
    up meanwhile: `proc_table.SharedScan`). Blocking: run it in a worker thread."""
    return _home_scans.get(home, lambda: processes_of_home(home))


def kill_strays(
    home: Path,
    formation_id: str | None,
    owned: Collection[int],
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """SIGKILL the processes of this fsup home (of one formation, or of any with None) that
    descend from none of `owned`; return how many. Processes of another fsup home or of another
    formation are never touched. Before each kill it asks `stop()`, and ends if that says so.
    Blocking (it reads /proc): run it in a worker thread."""
    return kill_unowned(scan_home(home), formation_id, owned, stop)


def kill_unowned(
    found: list[tuple[psutil.Process, str]],
    formation_id: str | None,
    owned: Collection[int],
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """`kill_strays` over processes already found (`scan_home`): a caller that must read what
    it owns after the scan (the fleet's reconcile) scans first. Blocking."""
    owned_pids = frozenset(owned)
    killed = 0
    for proc, found_id in found:
        if formation_id is not None and found_id != formation_id:
            continue
        try:
            lineage = {proc.pid} | {p.pid for p in proc.parents()}
        except psutil.Error:
            continue
        if lineage & owned_pids:
            continue
        if stop():
            break
        log.warning(
            "%s: killing stray pid %s (outside its live processes' trees)", found_id, proc.pid
        )
        kill_stray(proc)
        killed += 1
    return killed


Sweep = Callable[[Path, str | None, frozenset[int], Callable[[], bool]], int]


class Owner(Protocol):
    """What a formation owns now (its `Kept`): the live process, staging and retiring ones."""

    process: ProcessHandle | None
    extra_pids: set[int]
    spawning: int  # spawns in flight (`StraySweeper.spawning`): read by the fleet's reconcile


class StraySweeper:
    """One formation's sweeps for strays: what outlived its exited process outside the process
    group (a grandchild that called setsid). Each runs in a worker thread; nothing waits for it.

    A sweep spares the trees of the processes `owner` holds when it starts. A process the formation
    spawns while a sweep runs is not among them, so every spawn goes through `spawning()`: it
    makes the sweep in flight stop before its next kill (whatever it meets was alive before the
    spawn began, and may be the new process) and sweep again once the spawn is over, by then
    with the new process recorded, hence owned."""

    def __init__(
        self,
        home: Path,
        formation_id: str,
        owner: Owner,
        sweep: Sweep | None = None,
    ) -> None:
        self._home = home
        self._id = formation_id
        self._owner = owner
        self._sweep = sweep or kill_strays
        self._stops: set[threading.Event] = set()  # one per sweep in flight
        self._spawns = 0
        self._no_spawn = trio.Event()
        self._no_spawn.set()

    def start(self, nursery: trio.Nursery | None) -> None:
        assert nursery is not None
        nursery.start_soon(self._run)

    def _owned(self) -> frozenset[int]:
        process = self._owner.process
        return frozenset(self._owner.extra_pids | ({process.pid} if process is not None else set()))

    async def _run(self) -> None:
        while True:
            if self._spawns:
                await self._no_spawn.wait()
            stop = threading.Event()
            self._stops.add(stop)
            try:
                # Shielded: the sweep after the last stop must run even as the actor ends.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(
                        self._sweep, self._home, self._id, self._owned(), stop.is_set
                    )
            finally:
                self._stops.discard(stop)
            if not stop.is_set():
                return

    @contextmanager
    def spawning(self) -> Iterator[None]:
        """Around the spawn of a process of the formation, up to the moment it is recorded as
        owned (with no checkpoint between the end of this block and that moment)."""
        for stop in self._stops:
            stop.set()
        if self._spawns == 0:
            self._no_spawn = trio.Event()
        self._spawns += 1
        self._owner.spawning += 1
        try:
            yield
        finally:
            self._owner.spawning -= 1
            self._spawns -= 1
            if self._spawns == 0:
                self._no_spawn.set()

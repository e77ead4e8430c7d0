"""One `fsup serve` per home: an exclusive `flock` on `server/lock`, held for the process's life.

Two servers on one home fight (issue 17): the second adopts the first's processes, restarts
what the first gave up on, kills the other's new processes as strays, and its Ctrl-C stops
formations the first one serves. So `fsup serve` takes this lock before it writes anything in
the home, binds its port or opens the store; a second one finds it taken and exits at once,
having changed nothing.

`flock` belongs to the open file description: the kernel drops it when the last descriptor
of that description closes, so a server that dies (SIGKILL included) never leaves its home
locked. That only holds if no other process shares the descriptor: it is opened `O_CLOEXEC`
and formation processes are spawned with `close_fds` (`subprocess`'s default), so a formation
that outlives a crashed fsup does not keep its home locked for ever.

The holder writes its pid into the file after it locks, for the message a second server
prints. The file is fsup's own: a symbolic link is refused (`O_NOFOLLOW`: a link could point
the pid write at any file), and so are a hard link and anything but a plain file, each with
what to do.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from pathlib import Path
from types import TracebackType

from supervisor.storage.home import Home

# Open flags: never follow a link, never inherited by a child, never a controlling terminal,
# never blocking (a FIFO put there would otherwise hold the open).
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
# A holder writes its pid right after it locks; a second server that meets the lock in
# between waits this long at most for it.
PID_WAIT_S = 0.5
PID_POLL_S = 0.01


class ServerLockError(Exception):
    """The home cannot be locked; the message says why and what to do."""


class ServerLock:
    """The held lock on `path` (see the module). Release with `close()` or `with`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, home: Home) -> ServerLock:
        """Lock `server/lock` (creating the folder and the file when missing) and write this
        process's pid into it. `ServerLockError` when another server holds it or the path is
        not a plain file this process may open; nothing is written then."""
        path = home.lock
        try:
            home.server.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ServerLockError(f"cannot create {home.server}: {exc.strerror or exc}") from None
        fd = _open(path)
        try:
            _check_plain_file(fd, path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ServerLockError(_busy_message(home.root, holder_pid(fd))) from None
            except OSError as exc:
                raise ServerLockError(f"cannot lock {path}: {exc.strerror or exc}") from None
        except BaseException:
            os.close(fd)
            raise
        _write_pid(fd)
        return cls(path, fd)

    def close(self) -> None:
        """Release the lock (closing the descriptor releases it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> ServerLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _open(path: Path) -> int:
    try:
        return os.open(path, _OPEN_FLAGS, 0o600)
    except OSError as exc:
        raise ServerLockError(_open_message(path, exc)) from None


def _open_message(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return (
            f"{path} is a symbolic link; fsup does not follow links for its lock file. "
            f"Remove the link (rm {path}) and start again: fsup creates a plain file there"
        )
    if exc.errno == errno.EISDIR:
        return (
            f"{path} is a folder, not fsup's lock file. "
            f"Remove it (rmdir {path}) and start again: fsup creates a plain file there"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"cannot open {path}: permission denied. fsup must read and write it: give it "
            f"back to this user (chown, chmod 600 {path}) or remove it, and start again"
        )
    if exc.errno == errno.ENXIO:  # a socket file
        return _not_plain_message(path)
    return f"cannot open {path}: {exc.strerror or exc}"


def _check_plain_file(fd: int, path: Path) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ServerLockError(_not_plain_message(path))
    if info.st_nlink > 1:  # the pid would be written into another file's bytes
        raise ServerLockError(
            f"{path} is a hard link ({info.st_nlink} names for one file, which may be another "
            f"file's). Remove it (rm {path}) and start again: fsup creates a file of its own there"
        )


def _not_plain_message(path: Path) -> str:
    return (
        f"{path} is not a plain file (fsup's lock file is one). "
        f"Remove it (rm {path}) and start again: fsup creates a plain file there"
    )


def _busy_message(home_root: Path, pid: int | None) -> str:
    holder = f"pid {pid}" if pid is not None else "pid unknown"
    return (
        f"the home {home_root} is in use by another fsup serve ({holder}); "
        "stop that one first, or set MUXI_HOME to another home"
    )


def _write_pid(fd: int) -> None:
    """Write this pid over the file's start, then cut what an older, longer one left (never
    an empty file in between: a reader takes the first line)."""
    data = f"{os.getpid()}\n".encode()
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    except OSError:
        pass  # the pid is only for a second server's message; the lock is what counts


def holder_pid(fd: int, wait: float | None = None) -> int | None:
    """The pid written in the lock file open at `fd`, once it names a live process (the
    holder may not have written it yet, and the file may still hold a dead server's); waits
    `wait` (default `PID_WAIT_S`) at most."""
    deadline = time.monotonic() + (PID_WAIT_S if wait is None else wait)
    while True:
        pid = _read_pid(fd)
        if pid is not None and _alive(pid):
            return pid
        if time.monotonic() >= deadline:
            return None
        time.sleep(PID_POLL_S)


def _read_pid(fd: int) -> int | None:
    try:
        first = os.pread(fd, 32, 0).split(b"\n", 1)[0]
    except OSError:
        return None
    return int(first) if first.isdigit() and len(first) <= 10 else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False  # 0 and below name process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True

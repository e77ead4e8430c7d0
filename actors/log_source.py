"""Where a formation process's output goes, and how its last stderr lines are read back.

The log keeper (`supervisor.runtime.log_keeper`) holds the pipes and writes every line, stamped,
to the file of the process's version (`supervisor.storage.formation_logs` reads them); a
process spawned without it writes the legacy `stdout.log` and `stderr.log` itself. When a
process ends, its exit details carry its last stderr lines: the keeper is asked to write what
it has read first (`flush`), so the tail is the process's last words, not what happened to be
on disk.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from supervisor.storage import formation_logs

STDERR_TAIL_BYTES = 2048
# How long a process's exit waits for the keeper to write what it read (it answers in
# microseconds; this bounds a wedged keeper).
FLUSH_BOUND_S = 2.0


class Captured(Protocol):
    """A pair of pipes the log keeper reads: the child gets the write ends as fds 1 and 2."""

    key: str
    stdout: int
    stderr: int


class LogCapture(Protocol):
    """The log keeper, as a spawn needs it (`supervisor.runtime.log_keeper.LogKeeper`)."""

    async def capture(self, log_dir: Path, version: str) -> Captured: ...

    async def flush(self, key: str) -> None: ...

    def key_of_pipe(self, inode: int) -> str | None: ...


@dataclass(frozen=True)
class LogSource:
    """Where a process's output goes: read back for its last stderr lines when it ends."""

    log_dir: Path
    version: str | None  # None: the legacy files, written by the child itself
    since_ns: int  # lines from this time on are this process's (or its version's)
    flush: Callable[[], Awaitable[None]] | None = None  # the keeper writes what it read
    legacy_offset: int = 0

    async def stderr_tail(self) -> str:
        """The last stderr lines, at most about STDERR_TAIL_BYTES; "" when unreadable."""
        if self.flush is not None:
            with trio.move_on_after(FLUSH_BOUND_S):
                await self.flush()
        if self.version is None:
            return _legacy_tail(self.log_dir / "stderr.log", self.legacy_offset)
        try:
            return await trio.to_thread.run_sync(
                formation_logs.stderr_tail,
                self.log_dir,
                self.version,
                self.since_ns,
                STDERR_TAIL_BYTES,
            )
        except OSError:
            return ""


def _legacy_tail(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as log_file:
            size = log_file.seek(0, os.SEEK_END)
            log_file.seek(max(offset, size - STDERR_TAIL_BYTES))
            return log_file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""

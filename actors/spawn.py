"""Spawning a formation's process: its launch, its output handed to the log keeper.

Each process starts in its own session (its process group id is its pid). Its stdout and
stderr are the write ends of two pipes whose read ends the home's log keeper holds
(`supervisor.runtime.log_keeper`): the keeper stamps and writes every line, and keeps doing
so while fsup is down, so a child neither blocks nor loses a line then. When the keeper
cannot be reached, the child writes the legacy `stdout.log` and `stderr.log` itself (lines
without times) and the reason is logged: a formation never fails to start for its logs.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import trio

from .log_source import Captured, LogCapture, LogSource
from .process import ChildProcess, ProcessHandle

# A process's start time is known to a clock tick (10 ms): its lines are taken from a little
# before, never missed.
ADOPT_MARGIN_S = 0.05
log = logging.getLogger("fsup.process")


@dataclass(frozen=True)
class LaunchSpec:
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    log_dir: Path
    version: str


class Launcher(Protocol):
    async def spawn(self, spec: LaunchSpec) -> ProcessHandle: ...

    def adopted_log(
        self, log_dir: Path, version: str, pid: int, started_at: float
    ) -> LogSource: ...


class SpawnError(Exception):
    """The command could not be started at all (not found, not executable)."""


class OsLauncher:
    """Spawns real processes, their output captured by the log keeper (`logs`), or written
    to the legacy files when there is none or it cannot be reached."""

    def __init__(self, logs: LogCapture | None = None) -> None:
        self._logs = logs

    async def spawn(self, spec: LaunchSpec) -> ChildProcess:
        since_ns = time.time_ns()
        captured = await self._capture(spec)
        if captured is None:
            return await _spawn_to_files(spec, since_ns)
        try:
            process = await _open(spec, captured.stdout, captured.stderr)
        finally:
            # The child has its own copies now (or never started): ours would keep the
            # pipes open after it ends, and the keeper would never see their end.
            os.close(captured.stdout)
            os.close(captured.stderr)
        flush = partial(self._flush, captured.key)
        return ChildProcess(process, LogSource(spec.log_dir, spec.version, since_ns, flush))

    def adopted_log(self, log_dir: Path, version: str, pid: int, started_at: float) -> LogSource:
        """Where an adopted process's output goes: the keeper's file of its version when its
        stderr is a pipe (the keeper's; its key found by the pipe), else the legacy file an
        older fsup pointed it to."""
        since_ns = int((started_at - ADOPT_MARGIN_S) * 1e9)
        inode = _stderr_pipe(pid)
        if inode is None:
            return LogSource(log_dir, None, since_ns)
        key = self._logs.key_of_pipe(inode) if self._logs is not None else None
        return LogSource(log_dir, version, since_ns, partial(self._flush, key) if key else None)

    async def _capture(self, spec: LaunchSpec) -> Captured | None:
        if self._logs is None:
            return None
        try:
            return await self._logs.capture(spec.log_dir, spec.version)
        except (OSError, trio.TooSlowError) as exc:
            log.warning(
                "the log keeper could not take the output of %s (%s): it is written to "
                "stdout.log and stderr.log, lines without times",
                spec.argv[0],
                exc,
            )
            return None

    async def _flush(self, key: str) -> None:
        if self._logs is not None:
            try:
                await self._logs.flush(key)
            except (OSError, trio.TooSlowError):
                pass  # the tail may miss the last lines; the keeper writes them anyway


async def _open(spec: LaunchSpec, stdout: int, stderr: int) -> trio.Process:
    try:
        return await trio.lowlevel.open_process(
            list(spec.argv),
            cwd=str(spec.cwd),
            env=dict(spec.env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    except OSError as exc:
        raise SpawnError(_spawn_message(spec, exc)) from None


async def _spawn_to_files(spec: LaunchSpec, since_ns: int) -> ChildProcess:
    """The fallback: the child appends to the legacy files itself."""
    out_path, err_path = spec.log_dir / "stdout.log", spec.log_dir / "stderr.log"
    # Making a folder and opening two local append-mode files takes microseconds; no thread.
    # (With the keeper, it makes the folder itself, 0700 as here.)
    spec.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(out_path, "ab") as out, open(err_path, "ab") as err:  # noqa: ASYNC230
        offset = err.seek(0, os.SEEK_END)
        process = await _open(spec, out.fileno(), err.fileno())
    return ChildProcess(process, LogSource(spec.log_dir, None, since_ns, legacy_offset=offset))


def _stderr_pipe(pid: int) -> int | None:
    """The inode of `pid`'s stderr when it is a pipe, else None (a file, or gone)."""
    try:
        if not os.readlink(f"/proc/{pid}/fd/2").startswith("pipe:"):
            return None
        return os.stat(f"/proc/{pid}/fd/2").st_ino
    except OSError:
        return None


def _spawn_message(spec: LaunchSpec, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return f"command not found: {spec.argv[0]!r} (looked in {spec.cwd} and on PATH)"
    if exc.errno == errno.EACCES:
        return f"command is not executable: {spec.argv[0]!r}"
    return f"could not start {spec.argv[0]!r}: {exc.strerror or exc}"

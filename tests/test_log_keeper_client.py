"""fsup's side of the log keeper, against the real keeper process: a captured child's lines
reach the version's file; the read ends fsup holds keep the pipes open through a SIGKILL of
the keeper, which is replaced with them; a new fsup takes its duplicates back from a running
keeper; and when no keeper can be had, a capture fails at once (the spawn falls back)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import psutil
import pytest
import trio
from helpers import keeper_processes, wait_until

from supervisor.core import cri
from supervisor.runtime import log_keeper
from supervisor.runtime.log_keeper import KeeperUnavailable, LogKeeper, open_log_keeper
from supervisor.storage.formation_logs import LogLimits

LIMITS = LogLimits(max_bytes=1_000_000, backups=1)


@pytest.fixture
def keeper_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    (home / "server").mkdir(parents=True)
    yield home
    keepers = keeper_processes(home)
    for proc in keepers:
        proc.kill()
    psutil.wait_procs(keepers, timeout=10)


@asynccontextmanager
async def keeper_of(home: Path) -> AsyncIterator[LogKeeper]:
    async with open_log_keeper(home, LIMITS) as keeper:
        yield keeper


def texts(log_dir: Path, version: str) -> list[tuple[str, bytes]]:
    path = log_dir / f"{version}.log"
    if not path.exists():
        return []
    parsed = [cri.parse(raw) for raw in path.read_bytes().split(b"\n")]
    return [(p.stream, p.text) for p in parsed if p is not None]


async def test_a_captured_childs_lines_reach_its_versions_file(keeper_home: Path) -> None:
    log_dir = keeper_home / "logs" / "web"
    async with keeper_of(keeper_home) as keeper:
        captured = await keeper.capture(log_dir, "1.2.0")
        os.write(captured.stdout, b"hello\n")
        os.write(captured.stderr, b"oops\n")
        await keeper.flush(captured.key)
        assert texts(log_dir, "1.2.0") == [("stdout", b"hello"), ("stderr", b"oops")]
        os.close(captured.stdout)
        os.close(captured.stderr)
        # Both pipes at EOF: the keeper says so and fsup closes its read ends.
        await wait_until(lambda: captured.key not in keeper.held)
        assert keeper.spawned == 1


async def test_a_killed_keeper_is_replaced_with_the_pipes_fsup_holds(
    keeper_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_dir = keeper_home / "logs" / "web"
    async with keeper_of(keeper_home) as keeper:
        captured = await keeper.capture(log_dir, "1.0.0")
        (first,) = keeper_processes(keeper_home)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # The pipe is still open (fsup's read end): the write succeeds, no EPIPE.
        os.write(captured.stdout, b"written while no keeper ran\n")
        await wait_until(lambda: keeper.spawned == 2, within=20)
        await wait_until(lambda: bool(texts(log_dir, "1.0.0")), within=20)
        assert texts(log_dir, "1.0.0") == [("stdout", b"written while no keeper ran")]
        # Replaced at once: never reported unavailable (spawns would fall back to files).
        assert not [r for r in caplog.records if "could not be reached" in r.getMessage()]
        os.close(captured.stdout)
        os.close(captured.stderr)


async def test_a_new_fsup_takes_its_duplicates_back(keeper_home: Path) -> None:
    log_dir = keeper_home / "logs" / "web"
    async with keeper_of(keeper_home) as before:
        captured = await before.capture(log_dir, "1.0.0")
    # That fsup is gone (its read ends closed); the keeper and the child's pipes live on.
    async with keeper_of(keeper_home) as after:
        assert after.spawned == 0 and captured.key in after.held
        (running,) = keeper_processes(keeper_home)
        running.kill()
        running.wait(10)
        os.write(captured.stdout, b"still kept\n")
        await wait_until(lambda: bool(texts(log_dir, "1.0.0")), within=20)
        assert after.spawned == 1
        inode = os.fstat(captured.stderr).st_ino
        assert after.key_of_pipe(inode) == captured.key
    os.close(captured.stdout)
    os.close(captured.stderr)


async def test_without_a_keeper_a_capture_fails_at_once(
    keeper_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    monkeypatch.setattr(log_keeper, "RETRY_FIRST_S", 3600.0)
    async with keeper_of(keeper_home) as keeper:
        assert keeper.unavailable is not None
        open_fds = len(os.listdir("/proc/self/fd"))
        with trio.fail_after(1), pytest.raises(KeeperUnavailable):
            await keeper.capture(keeper_home / "logs" / "web", "1.0.0")
        assert len(os.listdir("/proc/self/fd")) == open_fds  # no pipe left open


async def test_an_answer_to_a_cancelled_request_is_dropped_not_fatal(keeper_home: Path) -> None:
    """A flush bounded by the caller (a process's exit waits 2 s at most) may be answered
    after it gave up: the late answer must neither crash fsup nor go to the next request."""
    log_dir = keeper_home / "logs" / "web"
    async with keeper_of(keeper_home) as keeper:
        captured = await keeper.capture(log_dir, "1.0.0")
        (running,) = keeper_processes(keeper_home)
        running.suspend()
        try:
            with trio.move_on_after(0.2) as waited:
                await keeper.flush(captured.key)
            assert waited.cancelled_caught
        finally:
            running.resume()
        os.write(captured.stdout, b"after the late answer\n")
        await keeper.flush(captured.key)  # its own answer, not the late one
        assert texts(log_dir, "1.0.0") == [("stdout", b"after the late answer")]
        assert keeper.unavailable is None and keeper.spawned == 1
        os.close(captured.stdout)
        os.close(captured.stderr)


async def test_a_socket_held_by_another_user_is_never_handed_output(
    keeper_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket name is in the abstract namespace, which has no permissions: the keeper
    fsup connects to must be its own user's. Here fsup believes it is another user."""
    monkeypatch.setattr(log_keeper, "RETRY_FIRST_S", 3600.0)
    monkeypatch.setattr(log_keeper.os, "geteuid", lambda: os.getuid() + 4242)
    async with keeper_of(keeper_home) as keeper:
        assert keeper.unavailable is not None and "held by uid" in keeper.unavailable
        with pytest.raises(KeeperUnavailable):
            await keeper.capture(keeper_home / "logs" / "web", "1.0.0")

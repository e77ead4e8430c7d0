"""Formation logs: rotation bounds, tail across rotated files, follow across rotation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import wait_until

from actors import log_rotation
from actors.log_rotation import serve_log_rotation
from supervisor.storage.formation_logs import (
    Follower,
    LogLimits,
    rotate_if_needed,
    stream_path,
    tail,
)


def write(path: Path, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(text)


def test_tail_reads_across_rotated_files(tmp_path: Path) -> None:
    limits = LogLimits(max_bytes=100, backups=2)
    for i in range(30):
        write(stream_path(tmp_path, "stdout"), f"line {i:02d}\n")
        rotate_if_needed(tmp_path, limits)
    assert tail(tmp_path, "stdout", 3, limits.backups) == ["line 27", "line 28", "line 29"]
    # Only three files' worth survives: the oldest lines are gone, the rest are in order.
    everything = tail(tmp_path, "stdout", 1000, limits.backups)
    assert everything == [f"line {i:02d}" for i in range(30 - len(everything), 30)]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["stdout.log", "stdout.log.1", "stdout.log.2"]
    # Bounded by max_bytes plus what was written between two checks (one line here).
    assert all(p.stat().st_size <= 100 + len("line 00\n") for p in tmp_path.iterdir())


def test_tail_of_missing_or_empty_or_unterminated(tmp_path: Path) -> None:
    assert tail(tmp_path, "stderr", 5, 3) == []
    write(stream_path(tmp_path, "stderr"), "")
    assert tail(tmp_path, "stderr", 5, 3) == []
    write(stream_path(tmp_path, "stderr"), "a\n\nb")
    assert tail(tmp_path, "stderr", 5, 3) == ["a", "", "b"]


def test_tail_with_long_files_reads_from_the_end(tmp_path: Path) -> None:
    lines = [f"{i:06d} " + "x" * 90 for i in range(5000)]
    write(stream_path(tmp_path, "stdout"), "\n".join(lines) + "\n")
    assert tail(tmp_path, "stdout", 2, 3) == lines[-2:]


def test_follower_survives_rotation_without_losing_lines(tmp_path: Path) -> None:
    path = stream_path(tmp_path, "stdout")
    write(path, "old\n")
    follower = Follower(tmp_path, "stdout")
    write(path, "one\ntw")
    assert follower.read_new() == ["one"]
    write(path, "o\nthree\n")
    rotate_if_needed(tmp_path, LogLimits(max_bytes=1, backups=1))
    write(path, "four\n")
    assert follower.read_new() == ["two", "three", "four"]
    assert follower.read_new() == []


class Listed:
    """The fleet's list of log dirs as `serve_log_rotation` reads it: once per round, so the
    number of reads counts the rounds begun (a round runs whole before the next read)."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dict(dirs)
        self.reads = 0

    def __call__(self) -> list[tuple[str, Path]]:
        self.reads += 1
        return list(self.dirs.items())

    async def next_round(self) -> None:
        """Until the next round begins: the round running now, if any, has ended."""
        after = self.reads
        await wait_until(lambda: self.reads > after, what="the next round of rotation")


async def rotated(log_dir: Path, content: str) -> None:
    """Until `content` has gone from the log into its first backup."""

    def done() -> bool:
        backup = stream_path(log_dir, "stdout", 1)
        return (
            stream_path(log_dir, "stdout").stat().st_size == 0
            and backup.exists()
            and backup.read_text() == content
        )

    await wait_until(done, what=f"{log_dir.name}'s rotation of {content!r}")


async def test_one_task_rotates_every_named_formation_and_follows_the_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real time: the copies run in worker threads, which a virtual clock would jump past. Quiet
    # logs are looked at every 0.1 s at most here, not every 5 s, so each wait is short.
    monkeypatch.setattr(log_rotation, "QUIET_MAX_S", 0.1)
    limits = LogLimits(max_bytes=10, backups=1)
    dirs = {name: tmp_path / name for name in ("a", "b")}
    for log_dir in dirs.values():
        log_dir.mkdir()
        stream_path(log_dir, "stdout").write_text("0123456789abc\n")
    listed = Listed(dirs)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_log_rotation, listed, limits, 0.02)
        for log_dir in dirs.values():
            await rotated(log_dir, "0123456789abc\n")
        del listed.dirs["b"]  # removed from the fleet: no longer looked at
        await listed.next_round()  # a round that may have read "b" before has ended
        # "a" and "b" have had the same files and looks so far: "b" would be due with "a".
        for log_dir in dirs.values():
            stream_path(log_dir, "stdout").write_text("second write\n")
        await rotated(dirs["a"], "second write\n")
        await listed.next_round()  # the round that rotated "a" has ended
        assert stream_path(dirs["b"], "stdout").read_text() == "second write\n"
        assert stream_path(dirs["b"], "stdout", 1).read_text() == "0123456789abc\n"
        nursery.cancel_scope.cancel()


async def test_a_quiet_log_is_looked_at_ever_less_often_and_a_growing_one_every_second(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[float] = []
    real_sizes = log_rotation.file_sizes

    def counted(files: tuple[str, ...]) -> tuple[int, ...]:
        looks.append(trio.current_time())
        return real_sizes(files)

    monkeypatch.setattr(log_rotation, "file_sizes", counted)
    log_dir = tmp_path / "a"
    log_dir.mkdir()
    stream_path(log_dir, "stdout").write_text("quiet\n")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_log_rotation, lambda: [("a", log_dir)], LogLimits(max_bytes=100))
        await trio.sleep(17.5)
        # Gaps of about 1, 2, 4 s, then every QUIET_MAX_S, on grids shared by every log.
        assert looks == [0, 1, 2, 4, 10, 15]
        stream_path(log_dir, "stdout").write_text("quiet\nnot any more\n")
        await trio.sleep(8)
        assert looks[6:] == [20, 21, 22, 24]  # it grew: every second again, then backing off
        nursery.cancel_scope.cancel()

"""Formation logs: the tail of every version's CRI file and the legacy files (merged by time,
fragments joined, read from the end), a version's last stderr lines, the legacy rotation (and
that it leaves the keeper's files alone). The follower is tested in test_log_follow.py."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from log_kit import KeeperFiles, at, shown

from actors import log_rotation
from actors.log_rotation import serve_log_rotation
from supervisor.core.cri import frame_lines
from supervisor.storage import formation_logs, log_files
from supervisor.storage.formation_logs import (
    MAX_LINE_BYTES,
    LogLimits,
    LogLine,
    rotate_if_needed,
    stderr_tail,
    stream_path,
    tail,
)

BOTH = ("stdout", "stderr")


def write(path: Path, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(text)


def texts(lines: list[LogLine]) -> list[str]:
    return [line.text for line in lines]


# -- legacy files (children of an older fsup) ------------------------------------------------


def test_legacy_tail_reads_across_rotated_files(tmp_path: Path) -> None:
    limits = LogLimits(max_bytes=100, backups=2)
    for i in range(30):
        write(stream_path(tmp_path, "stdout"), f"line {i:02d}\n")
        rotate_if_needed(tmp_path, limits)
    assert texts(tail(tmp_path, ["stdout"], 3, limits.backups)) == ["line 27", "line 28", "line 29"]
    # Only three files' worth survives: the oldest lines are gone, the rest are in order.
    everything = texts(tail(tmp_path, ["stdout"], 1000, limits.backups))
    assert everything == [f"line {i:02d}" for i in range(30 - len(everything), 30)]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["stdout.log", "stdout.log.1", "stdout.log.2"]
    # Bounded by max_bytes plus what was written between two checks (one line here).
    assert all(p.stat().st_size <= 100 + len("line 00\n") for p in tmp_path.iterdir())


def test_legacy_tail_of_missing_or_empty_or_unterminated(tmp_path: Path) -> None:
    assert tail(tmp_path, ["stderr"], 5, 3) == []
    write(stream_path(tmp_path, "stderr"), "")
    assert tail(tmp_path, ["stderr"], 5, 3) == []
    write(stream_path(tmp_path, "stderr"), "a\n\nb")
    assert tail(tmp_path, ["stderr"], 5, 3) == [
        LogLine(None, "stderr", text, None) for text in ("a", "", "b")
    ]


def test_legacy_lines_come_first_stdout_then_stderr_and_count_in_all(tmp_path: Path) -> None:
    write(stream_path(tmp_path, "stdout"), "o1\no2\n")
    write(stream_path(tmp_path, "stderr"), "e1\ne2\n")
    keeper = KeeperFiles(tmp_path, "1.0.0")
    keeper.line(at(5), "stderr", "new")
    got = tail(tmp_path, BOTH, 4, 3)
    assert [(x.ts, x.stream, x.text, x.version) for x in got] == [
        (None, "stdout", "o2", None),
        (None, "stderr", "e1", None),
        (None, "stderr", "e2", None),
        ("2026-12-06T13:00:05.000000Z", "stderr", "new", "1.0.0"),
    ]
    assert texts(tail(tmp_path, ["stdout"], 10, 3)) == ["o1", "o2"]
    assert tail(tmp_path, BOTH, 0, 3) == []


# -- the keeper's files ----------------------------------------------------------------------


def test_versions_are_merged_by_time_across_their_backups(tmp_path: Path) -> None:
    old = KeeperFiles(tmp_path, "1.0.0", max_bytes=200, backups=2)
    new = KeeperFiles(tmp_path, "1.1.0", max_bytes=200, backups=2)
    for i in range(12):  # an update: both versions write at once, each to its own file
        old.line(at(i, 0), "stdout", f"old {i:02d}")
        new.line(at(i, 500), "stderr", f"new {i:02d}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "1.0.0.log", "1.0.0.log.1", "1.0.0.log.2", "1.1.0.log", "1.1.0.log.1", "1.1.0.log.2",
    ]  # fmt: skip
    got = tail(tmp_path, BOTH, 6, backups=2)
    assert texts(got) == ["old 09", "new 09", "old 10", "new 10", "old 11", "new 11"]
    assert [x.version for x in got] == ["1.0.0", "1.1.0"] * 3
    assert got[-1].ts == "2026-12-06T13:00:11.000500Z"
    assert texts(tail(tmp_path, ["stderr"], 2, backups=2)) == ["new 10", "new 11"]
    everything = texts(tail(tmp_path, BOTH, 1000, backups=2))
    assert everything == sorted(everything, key=lambda t: (t[-2:], t[:3] == "new"))
    # `backups` bounds the files read: only the current ones with 0.
    assert len(tail(tmp_path, BOTH, 1000, backups=0)) < len(everything)


def test_fragments_are_joined_and_the_line_takes_its_first_fragments_time(tmp_path: Path) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0")
    keeper.partial(at(1), "stdout", "Loading")
    keeper.line(at(2), "stderr", "meanwhile")
    keeper.partial(at(3), "stdout", "...")
    keeper.line(at(4), "stdout", " done")
    keeper.partial(at(5), "stderr", "unfinished")  # shown as it is: the tail of the file
    got = tail(tmp_path, BOTH, 10, 3)
    assert [(x.ts, x.stream, x.text) for x in got] == [
        ("2026-12-06T13:00:01.000000Z", "stdout", "Loading... done"),
        ("2026-12-06T13:00:02.000000Z", "stderr", "meanwhile"),
        ("2026-12-06T13:00:05.000000Z", "stderr", "unfinished"),
    ]
    assert texts(tail(tmp_path, BOTH, 1, 3)) == ["unfinished"]
    assert texts(tail(tmp_path, ["stdout"], 1, 3)) == ["Loading... done"]


def test_a_long_line_is_cut_for_display_and_torn_or_foreign_lines_are_skipped(
    tmp_path: Path,
) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0")
    for _ in range(3):  # a 48 KiB line, cut by the keeper into 16 KiB fragments
        keeper.partial(at(1), "stdout", "x" * MAX_LINE_BYTES)
    keeper.line(at(1), "stdout", "end")
    with open(keeper.path(), "ab") as handle:
        handle.write(b"not a CRI line\n\n2026-12-06 stdout F bad time\n")
    keeper.append(frame_lines(at(2), "stderr", b"caf\xc3\xa9 \xff\n"))  # bad UTF-8 too
    with open(keeper.path(), "ab") as handle:
        handle.write(b"2026-12-06T13:00:03.000000000Z stdout F torn, no newl")
    got = tail(tmp_path, BOTH, 10, 3)
    assert [(x.stream, len(x.text)) for x in got] == [("stdout", MAX_LINE_BYTES), ("stderr", 6)]
    assert got[0].text == "x" * MAX_LINE_BYTES and got[1].text == "caf\u00e9 \ufffd"


def test_a_fragment_ended_after_more_than_lookback_lines_shows_as_two_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(formation_logs, "LOOKBACK", 5)

    def written(log_dir: Path, between: int) -> list[str]:
        log_dir.mkdir()
        keeper = KeeperFiles(log_dir, "1.0.0")
        keeper.partial(at(0), "stdout", "begun ")
        for i in range(between):
            keeper.line(at(1 + i), "stderr", f"e{i}")
        keeper.line(at(20), "stdout", "ended")
        keeper.line(at(21), "stdout", "x")
        return texts(tail(log_dir, BOTH, 20, 3))

    # Placed at its first fragment, before the other stream's lines written meanwhile.
    assert written(tmp_path / "near", 4) == ["begun ended", "e0", "e1", "e2", "e3", "x"]
    far = written(tmp_path / "far", 8)
    assert far == ["begun ", *(f"e{i}" for i in range(8)), "ended", "x"]


def test_the_tail_of_a_large_file_reads_only_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0", max_bytes=1 << 40)
    chunk = b"".join(
        b"2026-12-06T13:00:%02d.000000000Z stdout F line %06d %s\n" % (i % 60, i, b"x" * 60)
        for i in range(10_000)
    )
    with open(keeper.path(), "wb") as handle:
        for _ in range(20):  # about 20 MB
            handle.write(chunk)
    read = []

    class Counting(io.FileIO):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            read.append(len(data))
            return data

    monkeypatch.setattr(log_files, "open", lambda path, mode: Counting(path, "r"), raising=False)
    got = tail(tmp_path, BOTH, 100, 3)
    assert texts(got)[-1] == "line 009999 " + "x" * 60 and len(got) == 100
    assert sum(read) <= 2 * log_files.READ_BLOCK


def test_the_last_stderr_lines_of_a_version_since_a_process_started(tmp_path: Path) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0", max_bytes=300, backups=2)
    other = KeeperFiles(tmp_path, "1.1.0")
    keeper.line(at(1), "stderr", "from the process before")
    for i in range(6):
        keeper.line(at(10 + i), "stderr", f"trace {i}")
        keeper.line(at(10 + i), "stdout", "not stderr")
    other.line(at(20), "stderr", "another version")
    assert stderr_tail(tmp_path, "1.0.0", at(10)) == "".join(f"trace {i}\n" for i in range(6))
    assert stderr_tail(tmp_path, "1.0.0", at(14)) == "trace 4\ntrace 5\n"
    assert stderr_tail(tmp_path, "1.0.0", at(0), limit_bytes=10) == "4\ntrace 5\n"
    assert stderr_tail(tmp_path, "1.0.0", at(30)) == ""
    assert stderr_tail(tmp_path, "9.9.9", at(0)) == ""


# -- a generated log: the tail is the reference's end, for every count -----------------------

writes = st.lists(
    st.tuples(st.sampled_from(BOTH), st.booleans(), st.text("ab \u00e9", max_size=6)),
    max_size=40,
)


def reference(items: list[tuple[str, bool, str]]) -> list[tuple[str, str, str]]:
    """Reading forwards: each line placed at its first fragment, unfinished ones included."""
    started: dict[str, tuple[int, str, str]] = {}
    done: list[tuple[int, str, str, str]] = []
    for i, (stream, partial, text) in enumerate(items):
        first, ts, sofar = started.pop(stream, (i, shown(at(i)), ""))
        if partial:
            started[stream] = (first, ts, sofar + text)
        else:
            done.append((first, ts, stream, sofar + text))
    done += [(first, ts, stream, text) for stream, (first, ts, text) in started.items()]
    return [(ts, stream, text) for _, ts, stream, text in sorted(done)]


@settings(max_examples=300, deadline=None)
@given(items=writes, count=st.integers(1, 50), max_bytes=st.integers(60, 400))
def test_the_tail_is_the_end_of_the_whole_log_read_forwards(
    tmp_path_factory: pytest.TempPathFactory,
    items: list[tuple[str, bool, str]],
    count: int,
    max_bytes: int,
) -> None:
    log_dir = tmp_path_factory.mktemp("logs")
    keeper = KeeperFiles(log_dir, "2.0.0", max_bytes=max_bytes, backups=100)
    for i, (stream, partial, text) in enumerate(items):
        (keeper.partial if partial else keeper.line)(at(i), stream, text)
    got = [(x.ts, x.stream, x.text) for x in tail(log_dir, BOTH, count, 100)]
    assert got == reference(items)[-count:]


def test_log_rotation_leaves_the_keepers_files_alone(tmp_path: Path) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0", max_bytes=1 << 40)
    for i in range(100):
        keeper.line(at(i), "stdout", "x" * 100)
    size = keeper.path().stat().st_size
    assert rotate_if_needed(tmp_path, LogLimits(max_bytes=100, backups=2)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.0.0.log"]
    assert keeper.path().stat().st_size == size


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

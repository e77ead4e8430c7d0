"""The follower of a formation's log folder: new lines of every version's file with the
keeper's time, a new version's file, the keeper's rotation by renaming (once or several times
between two looks), fragments across looks and rotations, torn lines, the legacy files'
copy-truncate rotation, and time order within a look."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from log_kit import KeeperFiles, at, shown

from supervisor.storage import log_follow
from supervisor.storage.formation_logs import LogLimits, rotate_if_needed, stream_path
from supervisor.storage.log_files import LogLine
from supervisor.storage.log_follow import LegacyFollower, LogFollower


def write(path: Path, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(text)


def texts(lines: list[LogLine]) -> list[str]:
    return [line.text for line in lines]


def test_new_lines_come_with_the_keepers_time_and_their_version(tmp_path: Path) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0")
    keeper.line(at(1), "stdout", "before the follow")
    follower = LogFollower(tmp_path)
    assert follower.read_new() == []
    keeper.line(at(2), "stderr", "new")
    assert follower.read_new() == [LogLine(shown(at(2)), "stderr", "new", "1.0.0")]
    assert follower.read_new() == []


def test_a_new_versions_file_is_read_from_its_start_and_a_look_is_in_time_order(
    tmp_path: Path,
) -> None:
    old = KeeperFiles(tmp_path, "1.0.0")
    old.line(at(1), "stdout", "old one")
    follower = LogFollower(tmp_path)
    new = KeeperFiles(tmp_path, "1.1.0")  # an update: the new version starts beside the old
    new.line(at(2), "stdout", "new two")
    new.line(at(4), "stdout", "new four")
    old.line(at(3), "stderr", "old three")
    got = follower.read_new()
    assert texts(got) == ["new two", "old three", "new four"]
    assert [x.version for x in got] == ["1.1.0", "1.0.0", "1.1.0"]


def test_a_new_version_rotated_before_the_first_look_is_read_from_its_oldest_file(
    tmp_path: Path,
) -> None:
    follower = LogFollower(tmp_path)
    keeper = KeeperFiles(tmp_path, "1.1.0", backups=2)
    for i in range(3):
        keeper.line(at(i), "stdout", f"line {i}")
        keeper.rotate()
    assert texts(follower.read_new()) == ["line 1", "line 2"]  # line 0 went with `.3`


def test_the_streams_asked_for_only(tmp_path: Path) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0")
    follower = LogFollower(tmp_path, ("stderr",))
    keeper.line(at(1), "stdout", "out")
    keeper.line(at(2), "stderr", "err")
    assert texts(follower.read_new()) == ["err"]


@pytest.mark.parametrize("rotations", [1, 2, 3])
def test_rotation_by_renaming_loses_nothing(tmp_path: Path, rotations: int) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0", max_bytes=10_000, backups=3)
    keeper.line(at(0), "stdout", "seen before")
    follower = LogFollower(tmp_path)
    expected = []
    for i in range(rotations * 3):
        keeper.line(at(1 + i), "stdout", f"line {i}")
        expected.append(f"line {i}")
        if i % 3 == 2:
            keeper.rotate()
    keeper.line(at(50), "stdout", "after")
    assert texts(follower.read_new()) == [*expected, "after"]
    keeper.line(at(51), "stdout", "later")
    keeper.rotate()
    assert texts(follower.read_new()) == ["later"]
    assert follower.read_new() == []


def test_a_reader_more_rotations_behind_than_backups_loses_only_the_removed_files(
    tmp_path: Path,
) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0", backups=1)
    keeper.line(at(0), "stdout", "seen before")
    follower = LogFollower(tmp_path)
    keeper.line(at(1), "stdout", "gone with its file")
    keeper.rotate()
    keeper.line(at(2), "stdout", "kept in .1")
    keeper.rotate()  # the file being read is removed
    keeper.line(at(3), "stdout", "current")
    assert texts(follower.read_new()) == ["kept in .1", "current"]


def test_a_reader_behind_by_more_than_its_budget_catches_up_over_several_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_follow, "READ_BUDGET", 200)
    keeper = KeeperFiles(tmp_path, "1.0.0")
    keeper.line(at(0), "stdout", "seen before")
    follower = LogFollower(tmp_path)
    for i in range(10):
        keeper.line(at(i), "stdout", f"line {i}")
    keeper.rotate()
    keeper.line(at(20), "stdout", "after")
    got: list[str] = []
    for _ in range(20):
        got += texts(follower.read_new())
    assert got == [*(f"line {i}" for i in range(10)), "after"]


def test_fragments_are_joined_across_looks_and_rotations(tmp_path: Path) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0")
    follower = LogFollower(tmp_path)
    keeper.partial(at(1), "stdout", "Loading")
    keeper.line(at(2), "stderr", "meanwhile")
    assert follower.read_new() == [LogLine(shown(at(2)), "stderr", "meanwhile", "1.0.0")]
    keeper.partial(at(3), "stdout", "...")
    keeper.rotate()
    keeper.line(at(4), "stdout", " done")
    assert follower.read_new() == [LogLine(shown(at(1)), "stdout", "Loading... done", "1.0.0")]


def test_a_line_still_being_written_is_given_once_whole_and_foreign_lines_are_skipped(
    tmp_path: Path,
) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0")
    keeper.line(at(0), "stdout", "")
    follower = LogFollower(tmp_path)
    line = b"2026-12-06T13:00:01.000000000Z stdout F whole at last\n"
    keeper.append(line[:30])
    assert follower.read_new() == []
    keeper.append(line[30:] + b"not CRI\n")
    assert texts(follower.read_new()) == ["whole at last"]


def test_legacy_files_are_followed_across_copy_truncate_rotation(tmp_path: Path) -> None:
    path = stream_path(tmp_path, "stdout")
    write(path, "old\n")
    follower = LogFollower(tmp_path)
    write(path, "one\ntw")
    assert follower.read_new() == [LogLine(None, "stdout", "one", None)]
    write(path, "o\nthree\n")
    rotate_if_needed(tmp_path, LogLimits(max_bytes=1, backups=1))
    write(path, "four\n")
    KeeperFiles(tmp_path, "1.0.0").line(at(1), "stderr", "keeper")
    assert texts(follower.read_new()) == ["two", "three", "four", "keeper"]  # legacy first
    assert follower.read_new() == []


def test_the_legacy_follower_alone(tmp_path: Path) -> None:
    path = stream_path(tmp_path, "stderr")
    follower = LegacyFollower(tmp_path, "stderr")
    write(path, "a\n")
    assert follower.read_new() == ["a"]


steps = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["stdout", "stderr"]), st.booleans(), st.text("ab", max_size=4)),
        st.just("rotate"),
        st.just("read"),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(steps=steps, max_bytes=st.integers(50, 300))
def test_every_line_written_is_followed_once_each_look_in_time_order(
    tmp_path_factory: pytest.TempPathFactory, steps: list[Any], max_bytes: int
) -> None:
    """Whatever the writes, fragments, rotations (at most `backups` between two looks) and
    looks: every finished line is given once, whole, and each look is in time order."""
    log_dir = tmp_path_factory.mktemp("logs")
    keeper = KeeperFiles(log_dir, "1.0.0", max_bytes=max_bytes, backups=3)
    follower = LogFollower(log_dir)
    got: list[LogLine] = []
    started: dict[str, tuple[int, str]] = {}
    expected: list[tuple[str, str, str]] = []
    rotations = 0

    def look() -> None:
        nonlocal rotations
        batch = follower.read_new()
        assert [x.ts for x in batch] == sorted(x.ts or "" for x in batch)
        got.extend(batch)
        rotations = 0

    for i, step in enumerate(steps):
        if step == "read":
            look()
            continue
        before = keeper.path().stat().st_ino if keeper.path().exists() else None
        if step == "rotate":
            if keeper.path().exists():
                keeper.rotate()
        else:
            stream, partial, text = step
            first, sofar = started.pop(stream, (i, ""))
            if partial:
                keeper.partial(at(i), stream, text)
                started[stream] = (first, sofar + text)
            else:
                keeper.line(at(i), stream, text)
                expected.append((shown(at(first)), stream, sofar + text))
        after = keeper.path().stat().st_ino if keeper.path().exists() else None
        rotations += before is not None and before != after
        if rotations >= 3:
            look()
    look()
    assert sorted((x.ts or "", x.stream, x.text) for x in got) == sorted(expected)

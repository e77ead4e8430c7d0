"""The follow of `GET .../logs?follow=true` on files written by hand (no server): the history,
then new lines with the keeper's time; the follower begins before the history is read, and a
line written between the two is given once (`rpc.unseen`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from log_kit import KeeperFiles, at, shown

from supervisor.http.rpc import follow_logs, read_history, unseen
from supervisor.storage.formation_logs import stream_path
from supervisor.storage.log_files import LogLine
from supervisor.storage.log_follow import LogFollower

BOTH = ("stdout", "stderr")


class Routes:
    """The route table as the follow reads it: the formation exists until `deleted`."""

    def __init__(self) -> None:
        self.deleted = False

    def get(self, formation_id: str) -> object | None:
        return None if self.deleted else object()


async def test_a_line_written_between_the_followers_start_and_the_history_comes_once(
    tmp_path: Path, autojump_clock: Any
) -> None:
    keeper = KeeperFiles(tmp_path, "1.0.0")
    keeper.line(at(1), "stdout", "before")
    follower = LogFollower(tmp_path, BOTH)
    keeper.line(at(2), "stderr", "between")  # read by both
    history = read_history(tmp_path, BOTH, 10, 3)
    assert [x["line"] for x in history] == ["before", "between"]
    keeper.line(at(3), "stdout", "after")
    routes = Routes()
    got = []
    async for item in follow_logs(routes, "web", follower, history):  # type: ignore[arg-type]
        assert item is not None
        got.append(item[1])
        if item[1]["line"] == "after":
            routes.deleted = True  # the follow ends with the formation
    assert got == [
        {"ts": shown(at(1)), "stream": "stdout", "line": "before", "version": "1.0.0"},
        {"ts": shown(at(2)), "stream": "stderr", "line": "between", "version": "1.0.0"},
        {"ts": shown(at(3)), "stream": "stdout", "line": "after", "version": "1.0.0"},
    ]


def test_what_the_history_gave_is_taken_out_once_each_and_legacy_lines_are_kept() -> None:
    ok = LogLine(shown(at(1)), "stdout", "ok", "1.0.0")
    legacy = LogLine(None, "stdout", "", None)
    history = [ok.as_json(), legacy.as_json()]
    # Two equal lines of one write: the history had one of them (its first line was cut).
    fresh = [ok, ok, legacy, LogLine(shown(at(2)), "stdout", "ok", "1.0.0")]
    assert unseen(fresh, history) == [ok.as_json(), legacy.as_json(), fresh[3].as_json()]
    assert unseen(fresh, []) == [line.as_json() for line in fresh]


def test_the_history_is_n_lines_in_all_legacy_first(tmp_path: Path) -> None:
    stream_path(tmp_path, "stderr").write_text("old 1\nold 2\n")
    KeeperFiles(tmp_path, "1.2.0").line(at(1), "stdout", "new")
    assert read_history(tmp_path, BOTH, 2, 3) == [
        {"ts": None, "stream": "stderr", "line": "old 2", "version": None},
        {"ts": shown(at(1)), "stream": "stdout", "line": "new", "version": "1.2.0"},
    ]
    assert read_history(tmp_path, ("stdout",), 5, 3) == [
        {"ts": shown(at(1)), "stream": "stdout", "line": "new", "version": "1.2.0"}
    ]

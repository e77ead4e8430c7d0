"""`fsup logs` prints each line with when the keeper read it (local time, milliseconds) and its
stream; a legacy line (no time) with blanks of the same width, so the texts line up."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from supervisor.cli.commands import log_clock, print_log_line


@pytest.fixture
def paris(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_time_is_local_with_milliseconds(paris: None) -> None:
    assert log_clock("2026-12-06T13:02:11.482113Z") == "14:02:11.482"
    assert log_clock(None) == " " * len("14:02:11.482")
    assert log_clock("not a time") == "not a time"


def test_a_line_prints_its_time_stream_and_text(
    paris: None, capsys: pytest.CaptureFixture[str]
) -> None:
    print_log_line({"ts": "2026-12-06T13:02:11.482113Z", "stream": "stderr", "line": "boom"})
    print_log_line({"ts": None, "stream": "stdout", "line": "[legacy]", "version": None})
    assert capsys.readouterr().out.splitlines() == [
        "14:02:11.482 stderr | boom",
        "             stdout | [legacy]",
    ]

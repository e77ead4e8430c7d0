"""The CRI log format: what the keeper writes is what readers parse, and foreign lines are
skipped, not fatal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.core import cri


def test_a_timestamp_has_nine_digits_and_z() -> None:
    assert cri.timestamp(0) == b"1970-01-01T00:00:00.000000000Z"
    assert cri.timestamp(1_500_000_000_000_000_007) == b"2017-07-14T02:40:00.000000007Z"


def test_full_lines_each_get_the_prefix() -> None:
    framed = cri.frame_lines(0, "stderr", b"one\ntwo words\n")
    assert framed == (
        b"1970-01-01T00:00:00.000000000Z stderr F one\n"
        b"1970-01-01T00:00:00.000000000Z stderr F two words\n"
    )


def test_a_fragment_is_one_p_line() -> None:
    assert cri.frame_partial(0, "stdout", b"prompt: ") == (
        b"1970-01-01T00:00:00.000000000Z stdout P prompt: \n"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"hello world",
        b"2026-12-06T13:02:11.482113000Z stdin F x",
        b"2026-12-06T13:02:11.482113000Z stdout X x",
        b"2026-12-06 13:02:11 stdout F x",
        b"\xff\xfe stdout F x",
    ],
)
def test_foreign_lines_are_none(raw: bytes) -> None:
    assert cri.parse(raw) is None


def test_an_empty_line_parses_with_empty_text() -> None:
    parsed = cri.parse(b"2026-12-06T13:02:11.482113000Z stdout F ")
    assert parsed is not None and parsed.text == b"" and not parsed.partial
    assert parsed.ts_micro == "2026-12-06T13:02:11.482113Z"


@given(
    lines=st.lists(st.binary().filter(lambda b: b"\n" not in b), min_size=1, max_size=20),
    stream=st.sampled_from(cri.STREAMS),
    ts=st.integers(min_value=0, max_value=4_000_000_000 * 10**9),
)
def test_framed_lines_parse_back(lines: list[bytes], stream: str, ts: int) -> None:
    framed = cri.frame_lines(ts, stream, b"".join(line + b"\n" for line in lines))
    parsed = [cri.parse(raw) for raw in framed.split(b"\n")[:-1]]
    assert [p.text if p else None for p in parsed] == lines
    assert {(p.ts, p.stream, p.partial) for p in parsed if p} == {
        (cri.timestamp(ts).decode(), stream, False)
    }

"""The keeper's line assembler: full lines as `F` stamped with their first byte's read time,
long lines cut at 16 KiB, a waiting tail as `P` after 0.5 s, the last tail as `F` at EOF; and
the same lines however the reads cut the stream."""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core import cri
from supervisor.runtime.keeper.lines import HOLD_NS, MAX_FRAGMENT, LineAssembler

KIB16 = MAX_FRAGMENT


def parsed(data: bytes) -> list[tuple[int, str, str, bytes]]:
    """CRI bytes as (ts in ns, stream, tag, text); the tests' times are within 1970-01-01."""
    out = []
    for raw in data.split(b"\n")[:-1]:
        line = cri.parse(raw)
        assert line is not None and line.ts.startswith("1970-01-01T"), raw
        hours, minutes, seconds = (int(part) for part in line.ts[11:19].split(":"))
        ns = ((hours * 60 + minutes) * 60 + seconds) * 10**9 + int(line.ts[20:29])
        out.append((ns, line.stream, "P" if line.partial else "F", line.text))
    return out


def test_a_full_line_is_stamped_with_its_read() -> None:
    lines = LineAssembler("stdout")
    assert parsed(lines.feed(b"one\ntwo\n", 7)) == [
        (7, "stdout", "F", b"one"),
        (7, "stdout", "F", b"two"),
    ]
    assert lines.pending == 0 and lines.deadline() is None


def test_a_line_read_in_two_parts_has_its_first_part_s_time() -> None:
    lines = LineAssembler("stderr")
    assert lines.feed(b"hel", 10) == b""
    assert lines.pending == 3 and lines.deadline() == 10 + HOLD_NS
    assert parsed(lines.feed(b"lo\nnext\npart", 20)) == [
        (10, "stderr", "F", b"hello"),
        (20, "stderr", "F", b"next"),
    ]
    assert lines.deadline() == 20 + HOLD_NS


def test_a_waiting_tail_is_written_as_p_after_half_a_second() -> None:
    lines = LineAssembler("stdout")
    lines.feed(b"prompt: ", 100)
    assert lines.due(100 + HOLD_NS - 1) == b""
    assert parsed(lines.due(100 + HOLD_NS)) == [(100, "stdout", "P", b"prompt: ")]
    assert lines.pending == 0 and lines.due(10**12) == b""
    # The rest of the line is a fragment of its own, stamped when it came.
    assert parsed(lines.feed(b"yes\n", 900)) == [(900, "stdout", "F", b"yes")]


def test_the_tail_at_eof_is_a_full_line() -> None:
    lines = LineAssembler("stdout")
    lines.feed(b"a\nno newline", 5)
    assert parsed(lines.finish()) == [(5, "stdout", "F", b"no newline")]
    assert lines.finish() == b"" and lines.feed(b"", 6) == b""


def test_a_line_of_exactly_16_kib_is_one_full_line() -> None:
    lines = LineAssembler("stdout")
    assert parsed(lines.feed(b"x" * KIB16 + b"\n", 1)) == [(1, "stdout", "F", b"x" * KIB16)]


def test_a_long_line_is_cut_into_16_kib_fragments() -> None:
    lines = LineAssembler("stdout")
    out = parsed(lines.feed(b"a\n" + b"y" * (2 * KIB16 + 5) + b"\nb\n", 1))
    assert out == [
        (1, "stdout", "F", b"a"),
        (1, "stdout", "P", b"y" * KIB16),
        (1, "stdout", "P", b"y" * KIB16),
        (1, "stdout", "F", b"y" * 5),
        (1, "stdout", "F", b"b"),
    ]


def test_an_unfinished_line_never_holds_more_than_16_kib() -> None:
    lines = LineAssembler("stderr")
    assert parsed(lines.feed(b"z" * (KIB16 - 1), 1)) == []
    assert parsed(lines.feed(b"zz", 2)) == [(1, "stderr", "P", b"z" * KIB16)]
    assert lines.pending == 1 and lines.deadline() == 2 + HOLD_NS
    assert parsed(lines.feed(b"\n", 3)) == [(2, "stderr", "F", b"z")]


def test_a_tail_of_exactly_16_kib_ends_as_a_full_line() -> None:
    lines = LineAssembler("stdout")
    lines.feed(b"q" * KIB16, 1)
    assert lines.pending == KIB16
    assert parsed(lines.feed(b"\n", 2)) == [(1, "stdout", "F", b"q" * KIB16)]


def expected(stream: bytes, starts: list[int], stamps: list[int]) -> list[tuple[int, str, bytes]]:
    """What the whole stream must give: each line cut every 16 KiB, each piece stamped with
    the read that holds its first byte (the newline for an empty piece)."""

    def ts_at(position: int) -> int:
        return stamps[bisect.bisect_right(starts, position) - 1]

    out: list[tuple[int, str, bytes]] = []
    position = 0
    *full, last = stream.split(b"\n")
    for index, line in enumerate([*full, last]):
        if index == len(full) and not line:
            break
        while len(line) > KIB16:
            out.append((ts_at(position), "P", line[:KIB16]))
            position, line = position + KIB16, line[KIB16:]
        out.append((ts_at(position), "F", line))
        position += len(line) + 1
    return out


piece = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.integers(KIB16 - 2, 2 * KIB16 + 2).map(lambda n: b"w" * n),
    st.just(b""),
)


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(piece, min_size=1, max_size=12),
    ends_with_newline=st.booleans(),
    data=st.data(),
)
def test_any_cut_of_the_reads_gives_the_same_lines(
    pieces: list[bytes], ends_with_newline: bool, data: st.DataObject
) -> None:
    stream = b"\n".join(pieces) + (b"\n" if ends_with_newline else b"")
    if not stream:
        return
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream)), max_size=8))))
    starts = [0] + [c for c in cuts if c < len(stream)]
    stamps = [1000 * (i + 1) for i in range(len(starts))]
    lines = LineAssembler("stdout")
    written = b""
    for start, end, ts in zip(starts, [*starts[1:], len(stream)], stamps, strict=True):
        written += lines.feed(stream[start:end], ts)
        assert lines.pending <= KIB16
    written += lines.finish()
    got = [(ts, tag, text) for ts, _, tag, text in parsed(written)]
    assert got == expected(stream, starts, stamps)

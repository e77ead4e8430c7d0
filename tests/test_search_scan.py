"""The log scanner finds exactly the lines that reading the file line by line in text mode
and `matches` would find, in the same order, however the file is cut into chunks: ASCII logs
on the fast path, everything else (non-ASCII, `\\r` line ends, bad UTF-8) on the slow one."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import search_run
from supervisor.core.search_match import matches, matching_lines

PIECES = [
    "error",
    "ERROR",
    "Err",
    "disk",
    "full",
    " ",
    "\n",
    "\r",
    "\r\n",
    "é",
    "É",
    "\u212a",
    "k",
    "K",
    "İ",
    "i",
    "x",
    "\x00",
    "\t",
    "ǅ",
]


def reference(data: bytes, words: list[str], path: Path) -> list[str]:
    path.write_bytes(data)
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [line for line in handle if matches(line, words)]


def scanned(data: bytes, words: list[str], chunk: int) -> list[str]:
    out: list[str] = []
    view = data
    while view:  # cut as whole_line_chunks does, with a small chunk size
        cut = view.rfind(b"\n", 0, chunk) + 1 or view.find(b"\n") + 1 or len(view)
        out += matching_lines(view[:cut], words)
        view = view[cut:]
    return out


text = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)
raw = st.one_of(text.map(str.encode), st.binary(max_size=80))
keyword = st.lists(
    st.sampled_from(["error", "err", "disk full", "k", "é", "i", "x"]), min_size=1, max_size=2
).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(data=raw, key=keyword, chunk=st.integers(1, 64))
def test_the_scanner_agrees_with_reading_line_by_line(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, key: str, chunk: int
) -> None:
    words = key.lower().split()
    path = tmp_path_factory.mktemp("scan") / "log"
    assert scanned(data, words, chunk) == reference(data, words, path)


def test_whole_files_are_read_in_chunks_that_end_after_a_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_run, "SCAN_CHUNK", 10)
    path = tmp_path / "log"
    path.write_bytes(b"a line that is longer than ten\nshort\nno newline at the end")
    chunks = list(search_run.whole_line_chunks(path))
    assert b"".join(chunks) == path.read_bytes()
    assert len(chunks) > 1 and all(c.endswith(b"\n") for c in chunks[:-1])


def test_a_small_log_is_not_read_with_a_whole_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: `read(n)` allocates n bytes first; 1 MiB per small log in each scan thread
    left megabytes of free heap in the threads' malloc arenas, kept by the process."""
    asked: list[int] = []

    class Recording(io.FileIO):
        def read(self, size: int = -1) -> bytes:
            asked.append(size)
            return super().read(size)

    monkeypatch.setattr(search_run, "open", lambda path, mode: Recording(path, "r"), raising=False)
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(b"a few lines\n" * 10)
    large.write_bytes(b"x" * 99 + b"\n")
    large.write_bytes(large.read_bytes() * (3 * search_run.SCAN_CHUNK // 100))
    for path in (small, large):
        asked.clear()
        data = b"".join(search_run.whole_line_chunks(path))
        assert data == path.read_bytes()
        size = path.stat().st_size
        assert max(asked) <= max(search_run.MIN_READ, min(size, search_run.SCAN_CHUNK))


def test_the_ascii_path_is_taken_and_the_slow_path_for_the_rest() -> None:
    assert list(matching_lines(b"ok\nDisk FULL now\nfine\n", ["disk", "full"])) == [
        "Disk FULL now\n"
    ]
    # The Kelvin sign lowers to an ASCII "k": only the Unicode path sees it.
    assert list(matching_lines("a \u212a b\n".encode(), ["k"])) == ["a \u212a b\n"]
    assert list(matching_lines(b"half\rline\n", ["line"])) == ["line\n"]

"""The log scanner finds exactly the lines that reading the file line by line in text mode
and `matches` would find, in the same order, however the file is cut into chunks: ASCII logs
on the fast path, everything else (non-ASCII, `\\r` line ends, bad UTF-8) on the slow one."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from log_kit import KeeperFiles, at

from actors import search_run
from supervisor.core.cri import frame_lines, parse
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


def cri(*lines: tuple[int, str, str]) -> bytes:
    return b"".join(frame_lines(at(s), stream, text.encode() + b"\n") for s, stream, text in lines)


def test_cri_lines_are_matched_on_their_text_only() -> None:
    chunk = (
        cri(
            (1, "stderr", "boom"),
            (2, "stdout", "stderr says boom"),
            (3, "stdout", "Caf\u00e9 BOOM"),
        )
        + b"not a CRI line: stderr boom\n"
    )
    assert list(search_run.matching_cri_texts(chunk, ["stderr", "boom"])) == ["stderr says boom"]
    assert list(search_run.matching_cri_texts(chunk, ["2026"])) == []
    assert list(search_run.matching_cri_texts(chunk, ["boom"])) == [
        "boom",
        "stderr says boom",
        "Caf\u00e9 BOOM",
    ]
    assert list(search_run.matching_cri_texts(chunk, ["caf\u00e9"])) == ["Caf\u00e9 BOOM"]


def test_a_chunk_without_the_words_parses_no_line(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []

    def counting(raw: bytes) -> object:
        parsed.append(raw)
        return parse(raw)

    monkeypatch.setattr(search_run, "parse", counting)
    chunk = cri(*((i, "stdout", f"request #{i} ok") for i in range(1000)))
    assert list(search_run.matching_cri_texts(chunk, ["timeout"])) == []
    assert list(search_run.matching_cri_texts(chunk, ["request", "#999"])) == ["request #999 ok"]
    assert len(parsed) == 1
    # A word that every line's time holds: the prefixes are cut, still no line parsed.
    assert list(search_run.matching_cri_texts(chunk, ["#999", "2026"])) == []
    assert len(parsed) == 1


def test_a_scan_reads_every_versions_files_and_the_legacy_ones(tmp_path: Path) -> None:
    old = KeeperFiles(tmp_path, "1.0.0", max_bytes=40, backups=2)  # a file a line
    for i in range(4):
        old.line(at(i), "stdout", f"disk full {i}")
    KeeperFiles(tmp_path, "1.1.0").line(at(9), "stderr", "Disk FULL again")
    (tmp_path / "stderr.log.1").write_text("legacy: disk full\n")
    hits = search_run.scan_logs(tmp_path, ["disk", "full"], "alpha", backups=2)
    assert {h["title"] for h in hits} == {
        "disk full 2",  # in .2; 0 and 1 went past the last backup
        "disk full 3",
        "Disk FULL again",
        "legacy: disk full",
    }
    assert all(h["sources"] == ["alpha"] for h in hits)


cri_text = st.lists(
    st.sampled_from(["boom", "BOOM", "err", "stdout", "2026", "-", ":", "f", "P", " ", "é", "x"]),
    max_size=8,
).map("".join)
cri_keyword = st.lists(
    st.sampled_from(["boom", "err", "stderr", "out", "2026", "12-06", "f", "é", "x"]),
    min_size=1,
    max_size=2,
).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), cri_text), max_size=12),
    foreign=st.lists(cri_text, max_size=3),
    key=cri_keyword,
)
def test_cri_texts_are_found_alike_whether_a_word_may_be_in_a_prefix_or_not(
    texts: list[tuple[str, str]], foreign: list[str], key: str
) -> None:
    """Both ways of `matching_cri_texts` (cut the prefixes, or parse the lines found) give what
    parsing every line and matching its text gives."""
    words = key.lower().split()
    chunk = cri(*((i, stream, text) for i, (stream, text) in enumerate(texts)))
    chunk += "".join(f"{text}\n" for text in foreign).encode()
    expected = []
    for raw in chunk.split(b"\n"):
        line = parse(raw)
        if line is not None and matches(line.text.decode(), words):
            expected.append(line.text.decode())
    assert list(search_run.matching_cri_texts(chunk, words)) == expected

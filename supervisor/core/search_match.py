"""What counts as a hit, and how hits get their stable ids. Pure functions.

A log line is a hit when it contains every word of the keyword, case-insensitively. Hits are
deduplicated by `result_id`: for a log line, a hash of the line's text (so the same line logged
by two formations is one result with two sources); for a peer's hit, a hash of the id the peer
gave it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any

MAX_TITLE = 200
MAX_SNIPPET = 500


def words_of(keyword: str) -> list[str]:
    return [w for w in keyword.lower().split() if w]


def matches(line: str, words: list[str]) -> bool:
    lowered = line.lower()
    return all(word in lowered for word in words)


def matching_lines(chunk: bytes, words: list[str]) -> Iterator[str]:
    """The lines of `chunk` (whole lines of a UTF-8 log) that `matches` would take, in order,
    as reading the file in text mode would give them (universal newlines, bad bytes replaced).

    Pure ASCII without a carriage return, the common log, is searched at C speed: the chunk is
    lowered once and the longest word found with `bytes.find`; only the lines around a find are
    looked at. Anything else (non-ASCII text, whose Unicode lowering can make ASCII letters,
    or `\r` line ends) takes the line-by-line path, so both give the same hits."""
    if not words:
        return
    if chunk.isascii() and b"\r" not in chunk and all(word.isascii() for word in words):
        yield from _ascii_lines(chunk, [word.encode() for word in words])
        return
    text = chunk.decode("utf-8", "replace")
    for line in io.StringIO(text, newline=None):
        if matches(line, words):
            yield line


def _ascii_lines(chunk: bytes, words: list[bytes]) -> Iterator[str]:
    lowered = chunk.lower()
    probe = max(words, key=len)
    at = lowered.find(probe)
    while at >= 0:
        start = lowered.rfind(b"\n", 0, at) + 1
        end = lowered.find(b"\n", at)
        end = len(lowered) if end < 0 else end + 1
        line = lowered[start:end]
        if all(word in line for word in words):
            yield chunk[start:end].decode("ascii")
        at = lowered.find(probe, end)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def log_hit(line: str, formation_id: str) -> dict[str, Any]:
    text = line.strip()
    return {
        "result_id": _digest("log", text),
        "kind": "log",
        "title": text[:MAX_TITLE],
        "snippet": text[:MAX_SNIPPET],
        "sources": [formation_id],
    }


def peer_hit(hit: Any, formation_id: str) -> dict[str, Any] | None:
    """A hit from a formation's `search.path` answer, or None when it is malformed."""
    if not isinstance(hit, dict) or "id" not in hit or not isinstance(hit.get("title"), str):
        return None
    result: dict[str, Any] = {
        "result_id": _digest("peer", str(hit["id"])),
        "kind": "peer",
        "title": hit["title"][:MAX_TITLE],
        "sources": [formation_id],
    }
    for field, kind in (("size", int), ("score", (int, float))):
        value = hit.get(field)
        if isinstance(value, kind) and not isinstance(value, bool):
            result[field] = value
    if isinstance(hit.get("snippet"), str):
        result["snippet"] = hit["snippet"][:MAX_SNIPPET]
    return result

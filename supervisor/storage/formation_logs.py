"""A formation's logs: the tail of every version's file and the legacy ones, the last stderr
lines of a version, and the rotation of the legacy files.

The log keeper writes each version's output to `<version>.log` as CRI lines, each stamped
with the time it read it (`supervisor.storage.log_files`), and rotates them by renaming.
Readers here merge every version's files by time (`heapq.merge`), reading each backwards in
blocks, so a 100 MB log costs what the tail needs. A line longer than the keeper holds (or
unfinished when it had to write) is written as `P` fragments ended by an `F`: they are
joined into one line, which takes its first fragment's time.

Legacy files (`stdout.log`, `stderr.log`, from children an older fsup started, adopted after
an upgrade) have no time: their lines come first, stdout's then stderr's, with `ts` and
`version` null, and they are still rotated here by copy-then-truncate (`rotate_if_needed`):
the current file is copied to `.1` (older ones shift to `.2` ... `.N`, the oldest dropped)
and truncated in place; the child's append-mode writes carry on at the new end. The copy
catches up with writes made while it ran, so only a write landing in the microseconds
between its last look and the truncate can be lost.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.core.cri import STREAMS, CriLine, parse, timestamp
from supervisor.storage.log_files import (
    MAX_LINE_BYTES,
    READ_BLOCK,
    LogLine,
    lines_backwards,
    micro_ts,
    stream_path,
    text_of,
    version_files,
    versions_in,
)

# How many finished lines may wait behind one whose start is not found yet (reading
# backwards, an `F` may end `P` fragments written long before, with the other stream's lines
# in between): past it, that line is taken to start at its earliest fragment seen. Bounds
# what a tail holds and reads; a line finished after more of the other stream's lines than
# this shows as two lines.
LOOKBACK = 1000
STDERR_TAIL_BYTES = 2048

__all__ = [
    "LOOKBACK",
    "MAX_LINE_BYTES",
    "STREAMS",
    "LogLimits",
    "LogLine",
    "rotate_if_needed",
    "stderr_tail",
    "stream_path",
    "tail",
]


@dataclass(frozen=True)
class LogLimits:
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 3


# -- reading ----------------------------------------------------------------------------------


def tail(log_dir: Path, streams: Iterable[str], count: int, backups: int) -> list[LogLine]:
    """The last `count` lines in all of `streams`, oldest first: every version's lines merged
    by time, after the legacy files' (stdout's then stderr's). Reads each file backwards in
    blocks, only as far as the tail reaches."""
    wanted = tuple(s for s in STREAMS if s in streams)
    if count <= 0 or not wanted:
        return []
    newest_first = heapq.merge(
        *(version_backwards(log_dir, v, backups, wanted) for v in versions_in(log_dir)),
        key=_ts,
        reverse=True,
    )
    legacy = (
        LogLine(None, stream, text, None)
        for stream in reversed(wanted)
        for text in legacy_backwards(log_dir, stream, backups)
    )
    found = list(itertools.islice(itertools.chain(newest_first, legacy), count))
    found.reverse()
    return found


def stderr_tail(
    log_dir: Path, version: str, since_ns: int, limit_bytes: int = STDERR_TAIL_BYTES
) -> str:
    """The end (its last `limit_bytes` characters) of what `version` wrote to stderr at or
    after `since_ns` (a process's start, nanoseconds since the epoch), a newline after each
    line: the exit details fsup records when a process dies. Lines of an earlier process of
    the same version are older than `since_ns` and left out; reading backwards stops at the
    first of them, of either stream (a version that writes only stdout must not make every
    exit read all its backups). Only what the keeper has written: ask it to `flush` first."""
    since = micro_ts(timestamp(since_ns).decode())
    texts: list[str] = []
    size = 0
    for line in version_backwards(log_dir, version, 1_000, ("stdout", "stderr")):
        if _ts(line) < since:
            break
        if line.stream != "stderr":
            continue
        texts.append(line.text)
        size += len(line.text) + 1
        if size >= limit_bytes:
            break
    if not texts:
        return ""
    texts.reverse()
    return ("\n".join(texts) + "\n")[-limit_bytes:]


def version_backwards(
    log_dir: Path, version: str, backups: int, streams: tuple[str, ...]
) -> Iterator[LogLine]:
    """A version's lines of `streams`, newest first, across its current file and backups,
    fragments joined."""
    return joined_backwards(
        cri_backwards(version_files(log_dir, version, backups), streams), version
    )


def cri_backwards(paths: Iterable[Path], streams: tuple[str, ...]) -> Iterator[CriLine]:
    """The CRI lines of `paths` (newest file first) of `streams`, last first. Torn or foreign
    lines are skipped, and so is what follows a file's last newline: a line being written."""
    for path in paths:
        lines = lines_backwards(path)
        next(lines, None)  # after the last newline: empty, or not whole yet
        for raw in lines:
            line = parse(raw)
            if line is not None and line.stream in streams:
                yield line


@dataclass(slots=True)
class _Piece:
    """A line being put back together from the end: its earliest fragment found so far."""

    order: int  # where that fragment is (larger is later)
    ts: str
    stream: str
    parts: list[bytes] = field(default_factory=list)  # earliest first, about MAX_LINE_BYTES
    size: int = 0

    def prepend(self, order: int, line: CriLine) -> None:
        self.order, self.ts = order, line.ts
        self.parts.insert(0, line.text)
        self.size += len(line.text)
        while self.size - len(self.parts[-1]) >= MAX_LINE_BYTES:  # the end is cut anyway
            self.size -= len(self.parts.pop())

    def line(self, version: str) -> LogLine:
        return LogLine(micro_ts(self.ts), self.stream, text_of(b"".join(self.parts)), version)


def joined_backwards(lines: Iterable[CriLine], version: str) -> Iterator[LogLine]:
    """`lines` (last first) as whole lines, last first: each `P` fragment joined to the lines
    of its stream that follow it up to an `F`, the line placed (and timed) at its first
    fragment. A finished line waits until every line still open (its start not found) is
    known to start before it; `LOOKBACK` bounds the wait."""
    open_: dict[str, _Piece] = {}
    ready: list[tuple[int, _Piece]] = []  # a heap: the latest first
    for order, line in zip(itertools.count(0, -1), lines):
        piece = open_.get(line.stream)
        if piece is None or not line.partial:
            if piece is not None:  # `line` ends the line before: `piece` starts here
                heapq.heappush(ready, (-piece.order, piece))
            piece = open_[line.stream] = _Piece(order, line.ts, line.stream)
        piece.prepend(order, line)
        if len(ready) > LOOKBACK:
            for stuck in open_.values():
                heapq.heappush(ready, (-stuck.order, stuck))
            open_.clear()
        if ready:
            floor = max((p.order for p in open_.values()), default=None)
            while ready and (floor is None or -ready[0][0] > floor):
                yield heapq.heappop(ready)[1].line(version)
    for piece in open_.values():
        heapq.heappush(ready, (-piece.order, piece))
    while ready:
        yield heapq.heappop(ready)[1].line(version)


def legacy_backwards(log_dir: Path, stream: str, backups: int) -> Iterator[str]:
    """A legacy stream's lines, last first, across its rotated files (its current file's last
    line is shown even without its newline)."""
    for backup in range(0, backups + 1):
        lines = lines_backwards(stream_path(log_dir, stream, backup))
        first = next(lines, None)
        if first:  # not the empty "line" after a final newline
            yield text_of(first)
        for line in lines:
            yield text_of(line)


def _ts(line: LogLine) -> str:
    return line.ts or ""


# -- the legacy files' rotation ---------------------------------------------------------------


def rotate_if_needed(log_dir: Path, limits: LogLimits) -> list[str]:
    """Rotate each legacy stream whose file reached `max_bytes`; return the streams rotated.
    The keeper's `<version>.log` files are not looked at: the keeper rotates them."""
    rotated = []
    for stream in STREAMS:
        current = stream_path(log_dir, stream)
        try:
            if current.stat().st_size < limits.max_bytes:
                continue
        except FileNotFoundError:
            continue
        for backup in range(limits.backups - 1, 0, -1):
            older = stream_path(log_dir, stream, backup)
            if older.exists():
                older.replace(stream_path(log_dir, stream, backup + 1))
        _copy_until_stable(current, stream_path(log_dir, stream, 1) if limits.backups else None)
        os.truncate(current, 0)
        rotated.append(stream)
    return rotated


def _copy_until_stable(current: Path, backup: Path | None) -> None:
    """Copy `current` to `backup`, then append whatever the child wrote meanwhile, until the
    size holds still; what is left is the microseconds between the last look and the
    truncate that follows."""
    copied = 0
    with open(current, "rb") as source, open(backup or os.devnull, "wb") as target:
        while True:
            chunk = source.read(READ_BLOCK * 16)
            if chunk:
                target.write(chunk)
                copied += len(chunk)
                continue
            if current.stat().st_size <= copied:
                return

"""A formation's stdout and stderr logs: rotation, tail, follow.

Children write straight to their log files (opened in append mode), so they keep logging when
fsup is away and fsup never sits in their output path. Two consequences:

- Rotation is copy-then-truncate: the current file is copied to `.1` (older ones shift to
  `.2` ... `.N`, the oldest dropped) and truncated in place; the child's append-mode writes
  carry on at the new end. The copy catches up with writes made while it ran, so only a
  write landing in the microseconds between its last look and the truncate can be lost.
- Lines carry no timestamp of their own. Lines read back from the files have `ts: null`; lines
  delivered by `follow` carry the time fsup read them. Across the two streams the order of
  old lines is not known, so `stream=all` gives stdout's lines, then stderr's.

Disk use per formation is bounded by `2 streams x (backups + 1) x max_bytes`, plus what is
written between two rotation checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STREAMS = ("stdout", "stderr")
READ_BLOCK = 64 * 1024
MAX_LINE_BYTES = 16 * 1024


@dataclass(frozen=True)
class LogLimits:
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 3


def stream_path(log_dir: Path, stream: str, backup: int = 0) -> Path:
    name = f"{stream}.log" + (f".{backup}" if backup else "")
    return log_dir / name


def rotate_if_needed(log_dir: Path, limits: LogLimits) -> list[str]:
    """Rotate each stream whose file reached `max_bytes`; return the streams rotated."""
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


def _lines_backwards(path: Path) -> Iterator[bytes]:
    """A file's lines, last first, reading blocks from the end. A file ending in a newline
    yields an empty line first."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    with handle:
        position = handle.seek(0, os.SEEK_END)
        pending = b""
        while position > 0:
            step = min(READ_BLOCK, position)
            position -= step
            handle.seek(position)
            parts = (handle.read(step) + pending).split(b"\n")
            pending = parts[0]  # may continue in the block before
            yield from reversed(parts[1:])
        yield pending


def tail(log_dir: Path, stream: str, count: int, backups: int) -> list[str]:
    """The last `count` lines of one stream, oldest first, across its rotated files."""
    found: list[bytes] = []
    for backup in range(0, backups + 1):
        lines = _lines_backwards(stream_path(log_dir, stream, backup))
        first = next(lines, None)
        if first:  # not the empty "line" after a final newline
            found.append(first)
        for line in lines:
            if len(found) >= count:
                break
            found.append(line)
        if len(found) >= count:
            break
    return [_text(line) for line in reversed(found[:count])]


def _text(line: bytes) -> str:
    return line[:MAX_LINE_BYTES].decode("utf-8", errors="replace").rstrip("\r")


class Follower:
    """Reads what is appended to one stream's file, surviving copy-truncate rotation and
    restarts of the child (which append to the same file)."""

    def __init__(self, log_dir: Path, stream: str) -> None:
        self.log_dir = log_dir
        self.stream = stream
        path = stream_path(log_dir, stream)
        self.offset = path.stat().st_size if path.exists() else 0
        self._partial = b""

    def read_new(self) -> list[str]:
        """Complete lines appended since the last call."""
        current = stream_path(self.log_dir, self.stream)
        try:
            size = current.stat().st_size
        except FileNotFoundError:
            return []
        data = b""
        if size < self.offset:
            # Rotated: what we had not read yet went to `.1` with the copy.
            data = _read_from(stream_path(self.log_dir, self.stream, 1), self.offset)
            self.offset = 0
        chunk = _read_from(current, self.offset)
        self.offset += len(chunk)
        return self._split(data + chunk)

    def _split(self, data: bytes) -> list[str]:
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_LINE_BYTES:
            lines.append(self._partial)
            self._partial = b""
        return [_text(line) for line in lines]


def _read_from(path: Path, start: int) -> bytes:
    """Up to 1 MiB of `path` from `start` (nothing if it is gone)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read(READ_BLOCK * 16)
    except FileNotFoundError:
        return b""

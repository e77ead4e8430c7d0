"""Following a formation's log folder: the lines written since the last look, of every
version's file and of the legacy files.

`LogFollower.read_new` is called on a poll (the API's `follow=true`, a live search). It holds
no file open between calls: per version file it keeps the inode and the offset read, so a
look at a quiet file is one `stat`. What it handles:

- A new version's file appearing (an update starts the new version beside the old one): it
  is read from its start (from its oldest backup's, if it was rotated before the first look).
- The keeper's rotation by renaming (`1.2.0.log` -> `1.2.0.log.1`): when the current name no
  longer has the inode being read, that file is found among the backups by its inode, read to
  its end (the keeper renames only after its last write to it), then the next newer file from
  its start. A reader more than `backups` rotations behind (or with `backups: 0`, where the
  keeper removes the full file) loses the unread end of the file it was reading.
- Legacy files rotated by copy-then-truncate, as before: a file smaller than the offset read
  was rotated, and what was not read yet is in `.1`.

Lines come with the keeper's time from the file (not the time they were read), `P` fragments
joined with their `F` (a line is given once it is finished), in time order within each call,
legacy lines (no time) first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.core.cri import STREAMS, CriLine, parse
from supervisor.storage.log_files import (
    MAX_LINE_BYTES,
    READ_BLOCK,
    LogLine,
    micro_ts,
    stream_path,
    text_of,
    version_path,
    versions_in,
)

# Bytes read from one file per call: a reader far behind catches up over several calls.
READ_BUDGET = READ_BLOCK * 16
# Bytes that identify a file with its inode (`_VersionReader`).
ANCHOR_BYTES = 64
# Files crossed per version per call (each rotation since the last call is one).
MAX_HOPS = 8


class LogFollower:
    """Reads what is appended to a formation's log folder, surviving rotations, updates
    (a new version's file) and restarts of the child (which append to the same file)."""

    def __init__(self, log_dir: Path, streams: tuple[str, ...] = STREAMS) -> None:
        self.log_dir = log_dir
        self.streams = streams
        self._versions = {v: _VersionReader.at_end(log_dir, v) for v in versions_in(log_dir)}
        self._legacy = [LegacyFollower(log_dir, stream) for stream in streams]

    def read_new(self) -> list[LogLine]:
        """Whole lines written since the last call, legacy ones first, the rest by time."""
        found = [
            LogLine(None, legacy.stream, text, None)
            for legacy in self._legacy
            for text in legacy.read_new()
        ]
        fresh: list[LogLine] = []
        for version in sorted(set(versions_in(self.log_dir)) | set(self._versions)):
            # A version new since the follow began: every file of it is new.
            reader = self._versions.setdefault(version, _VersionReader(version))
            fresh += reader.read_new(self.log_dir, self.streams)
        fresh.sort(key=lambda line: line.ts or "")  # stable: a file's order within a time
        return found + fresh


class _Gone(Exception):
    """The file being read is gone and its inode names another file now."""


@dataclass
class _VersionReader:
    """Where a version's files have been read to, and its lines not finished yet.

    A file is known by its inode, and by the last bytes read from it (`anchor`): an inode is
    reused once its file is removed (a rotation past `backups`), and the CRI lines' times make
    the same bytes at the same offset of another file all but impossible."""

    version: str
    inode: int | None = None  # None: its file has not been read yet (read it from its start)
    offset: int = 0
    anchor: bytes = b""  # the last bytes read, up to `offset`
    rest: bytes = b""  # an unfinished CRI line at the end of what was read
    pending: dict[str, list[CriLine]] = field(default_factory=dict)  # `P` fragments by stream

    @classmethod
    def at_end(cls, log_dir: Path, version: str) -> _VersionReader:
        """A reader of what comes after the version's newest file as it is now (its current
        one, or `.1` between a rotation and the next write)."""
        newest = version_path(log_dir, version)
        if not newest.exists():
            newest = version_path(log_dir, version, 1)
        try:
            with open(newest, "rb") as handle:
                end = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, end - ANCHOR_BYTES))
                anchor = handle.read(ANCHOR_BYTES)
                return cls(version, os.fstat(handle.fileno()).st_ino, end, anchor)
        except FileNotFoundError:
            return cls(version)

    def read_new(self, log_dir: Path, streams: tuple[str, ...]) -> list[LogLine]:
        out: list[LogLine] = []
        current = version_path(log_dir, self.version)
        for _ in range(MAX_HOPS):
            if self.inode is None:  # nothing read yet: from the start of its oldest file
                oldest = _stat(_newer_than(log_dir, self.version, None))
                if oldest is None:
                    break
                self.inode, self.offset = oldest.st_ino, 0
            now = _stat(current)
            backup: int | None = 0
            if now is None or now.st_ino != self.inode:
                # Renamed by a rotation: finish it where it is now, then the next newer file.
                backup = _backup_holding(log_dir, self.version, self.inode)
            elif now.st_size == self.offset:
                break  # nothing new
            if backup is not None:
                try:
                    chunk = self._read(version_path(log_dir, self.version, backup))
                except _Gone:
                    backup = None
                else:
                    if chunk is None:
                        continue  # renamed meanwhile: look again
                    out += self._take(chunk, streams)
                    if backup == 0 or len(chunk) >= READ_BUDGET:
                        break  # the current file read to its end, or more of it next time
            following = _stat(_newer_than(log_dir, self.version, backup))
            if following is None:
                break  # not written yet: stay at the end of this one, to find it from there
            self.inode, self.offset = following.st_ino, 0
            self.anchor, self.rest = b"", b""  # a torn line's start is dropped
        return out

    def _read(self, path: Path) -> bytes | None:
        """Up to `READ_BUDGET` bytes of `path` from `offset`; None if `path` is no longer the
        file being read (renamed meanwhile); `_Gone` if its inode names another file now."""
        try:
            with open(path, "rb") as handle:
                info = os.fstat(handle.fileno())
                if info.st_ino != self.inode:
                    return None
                if info.st_size < self.offset:
                    raise _Gone
                handle.seek(self.offset - len(self.anchor))
                if handle.read(len(self.anchor)) != self.anchor:
                    raise _Gone
                return handle.read(READ_BUDGET)
        except FileNotFoundError:
            return None

    def _take(self, chunk: bytes, streams: tuple[str, ...]) -> list[LogLine]:
        self.offset += len(chunk)
        self.anchor = (self.anchor + chunk)[-ANCHOR_BYTES:]
        *raws, self.rest = (self.rest + chunk).split(b"\n")
        if len(self.rest) > 2 * MAX_LINE_BYTES:  # no keeper line is that long: foreign
            self.rest = b""
        out = []
        for raw in raws:
            line = parse(raw)
            if line is not None and line.stream in streams:
                whole = self._join(line)
                if whole is not None:
                    out.append(whole)
        return out

    def _join(self, line: CriLine) -> LogLine | None:
        """`line` as a whole line, or None while it is a fragment that more will follow."""
        fragments = self.pending.setdefault(line.stream, [])
        if line.partial:
            if sum(len(f.text) for f in fragments) < MAX_LINE_BYTES:  # the rest is cut anyway
                fragments.append(line)
            return None
        del self.pending[line.stream]
        first = fragments[0] if fragments else line
        text = b"".join(f.text for f in fragments) + line.text
        return LogLine(micro_ts(first.ts), line.stream, text_of(text), self.version)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _backup_holding(log_dir: Path, version: str, inode: int) -> int | None:
    """Which backup the file `inode` now is, None if it is gone (removed by the rotation)."""
    backup = 1
    while (found := _stat(version_path(log_dir, version, backup))) is not None:
        if found.st_ino == inode:
            return backup
        backup += 1
    return None


def _newer_than(log_dir: Path, version: str, backup: int | None) -> Path:
    """The file written after backup `backup` (after a removed one: the oldest backup left,
    all of them newer than it)."""
    if backup is None:
        backup = 1
        while version_path(log_dir, version, backup).exists():
            backup += 1
    return version_path(log_dir, version, backup - 1)


class LegacyFollower:
    """Reads what is appended to one legacy stream's file (`stdout.log`), surviving its
    copy-truncate rotation and restarts of the child (which append to the same file)."""

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
        if size == self.offset:
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
        return [text_of(line) for line in lines]


def _read_from(path: Path, start: int) -> bytes:
    """Up to 1 MiB of `path` from `start` (nothing if it is gone)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read(READ_BUDGET)
    except FileNotFoundError:
        return b""

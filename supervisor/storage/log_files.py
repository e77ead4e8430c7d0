"""The files of a formation's log folder, and the line every reader of them answers.

Two kinds of file live there (docs/decisions.md, the log keeper):

- `<version>.log` (+ `.1` .. `.N` backups, `.1` the newest): CRI lines (`supervisor.core.cri`)
  the log keeper writes, one file per version so that a line says which version wrote it.
  The keeper is their only writer; it rotates them by renaming.
- `stdout.log`, `stderr.log` (+ `.1` .. `.N`): plain lines, no time, from children an older
  fsup started (they keep writing them after an upgrade); rotated by copy-then-truncate.

This module holds what the tail, the follower and the search share: the names, a file's
lines read backwards in blocks, and the text a line is shown with.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.core.cri import STREAMS

READ_BLOCK = 64 * 1024
MAX_LINE_BYTES = 16 * 1024
# A version's file or backup: `1.2.0.log`, `1.2.0.log.3`. Greedy: `a.log.1.log` is `a.log.1`.
VERSION_FILE = re.compile(r"(.+)\.log(?:\.([1-9][0-9]*))?")


@dataclass(frozen=True)
class LogLine:
    """One line as the API answers it. `ts` is when the keeper read it (RFC 3339 UTC with
    microseconds; a line cut into fragments has its first fragment's), None for a line of a
    legacy file (no time is known); `version` is the version whose file holds it, None for a
    legacy line."""

    ts: str | None
    stream: str
    text: str
    version: str | None

    def as_json(self) -> dict[str, Any]:
        return {"ts": self.ts, "stream": self.stream, "line": self.text, "version": self.version}


def stream_path(log_dir: Path, stream: str, backup: int = 0) -> Path:
    """A legacy file: `stdout.log`, `stderr.log.2`."""
    return log_dir / (f"{stream}.log" + (f".{backup}" if backup else ""))


def version_path(log_dir: Path, version: str, backup: int = 0) -> Path:
    """A version's CRI file: `1.2.0.log`, `1.2.0.log.1`."""
    return log_dir / (f"{version}.log" + (f".{backup}" if backup else ""))


def versions_in(log_dir: Path, current_only: bool = False) -> list[str]:
    """The versions with a file in `log_dir` (with a current `.log` file only, if asked),
    sorted; the legacy `stdout`/`stderr` files are not versions."""
    found: set[str] = set()
    try:
        entries = os.scandir(log_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    with entries:
        for entry in entries:
            match = VERSION_FILE.fullmatch(entry.name)
            if match is None or match[1] in STREAMS or (current_only and match[2]):
                continue
            found.add(match[1])
    return sorted(found)


def version_files(log_dir: Path, version: str, backups: int) -> Iterator[Path]:
    """A version's files newest first: the current one, then `.1`, `.2`, ... up to `backups`
    or the first one missing (the keeper shifts them, so they have no gaps)."""
    yield version_path(log_dir, version)
    for backup in range(1, backups + 1):
        path = version_path(log_dir, version, backup)
        if not path.exists():
            return
        yield path


def lines_backwards(path: Path) -> Iterator[bytes]:
    """A file's lines without their newline, last first, reading blocks from the end (a
    100 MB file costs what the caller takes). The first item is what follows the last
    newline: empty for a file that ends with one, else a line still being written (or torn).
    A missing file has no lines."""
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


def text_of(line: bytes) -> str:
    """A line's text for display: cut at `MAX_LINE_BYTES`, bad UTF-8 replaced."""
    return line[:MAX_LINE_BYTES].decode("utf-8", errors="replace").rstrip("\r")


def micro_ts(ts: str) -> str:
    """A CRI time with exactly six fractional digits (`CriLine.ts_micro` for the keeper's
    nine), so that times compare as strings even from a foreign writer that wrote fewer."""
    if len(ts) == 30:  # the keeper's own: YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ
        return ts[:26] + "Z"
    head, _, fraction = ts[:-1].partition(".")
    return f"{head}.{fraction[:6]:0<6}Z"

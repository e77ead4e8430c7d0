"""The log keeper's files written by hand, for the tests of their readers: CRI lines framed
with `supervisor.core.cri` and rotated by renaming as the keeper does (after a write that
takes the file to `max_bytes` or more: `.N-1` -> `.N` ... `.log` -> `.log.1`)."""

from __future__ import annotations

import calendar
from pathlib import Path

from supervisor.core.cri import frame_lines, frame_partial

NS = 1_000_000_000
BASE_NS = calendar.timegm((2026, 12, 6, 13, 0, 0)) * NS


def at(seconds: int, micros: int = 0) -> int:
    """A time on 2026-12-06 from 13:00:00 UTC, in nanoseconds since the epoch."""
    return BASE_NS + seconds * NS + micros * 1000


def shown(ts_ns: int) -> str:
    """`ts_ns` as the API shows it (microseconds)."""
    micros = (ts_ns - BASE_NS) // 1000
    seconds, micros = divmod(micros, 1_000_000)
    minutes, seconds = divmod(seconds, 60)
    return f"2026-12-06T13:{minutes:02d}:{seconds:02d}.{micros:06d}Z"


class KeeperFiles:
    """One version's files in a log folder, written and rotated as the keeper does."""

    def __init__(
        self, log_dir: Path, version: str, max_bytes: int = 1 << 30, backups: int = 3
    ) -> None:
        self.log_dir = log_dir
        self.version = version
        self.max_bytes = max_bytes
        self.backups = backups

    def path(self, backup: int = 0) -> Path:
        return self.log_dir / (f"{self.version}.log" + (f".{backup}" if backup else ""))

    def line(self, ts_ns: int, stream: str, text: str) -> None:
        self.append(frame_lines(ts_ns, stream, text.encode() + b"\n"))

    def partial(self, ts_ns: int, stream: str, text: str) -> None:
        self.append(frame_partial(ts_ns, stream, text.encode()))

    def append(self, data: bytes) -> None:
        with open(self.path(), "ab") as handle:
            handle.write(data)
            full = handle.tell() >= self.max_bytes
        if full:
            self.rotate()

    def rotate(self) -> None:
        for backup in range(self.backups - 1, 0, -1):
            if self.path(backup).exists():
                self.path(backup).replace(self.path(backup + 1))
        if self.backups:
            self.path().replace(self.path(1))
        else:
            self.path().unlink()

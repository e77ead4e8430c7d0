"""The container runtime (CRI) log format: how a formation's output is kept on disk.

One line of the file per line of output: `<RFC 3339 time, nanoseconds> <stream> <tag> <text>`,
for example `2026-12-06T13:02:11.482113000Z stderr F listening on 8001`. The tag is `F` for a
full line and `P` for a fragment that the next line of the same stream continues (a line
longer than the keeper holds, or one still unfinished when it had to write). It is the format
kubelet, containerd and conmon write, and Fluent Bit, Vector and Promtail read as is, so the
files work with the tools operators already ship logs with, and `tail -f` stays readable.

Pure: bytes in, bytes out; the log keeper writes with it and fsup's readers parse with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

STREAMS: Final = ("stdout", "stderr")
FULL: Final = b"F"
PARTIAL: Final = b"P"


def timestamp(ts_ns: int) -> bytes:
    """`ts_ns` (nanoseconds since the epoch, UTC) as RFC 3339 with nine digits and `Z`."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + (b".%09dZ" % nanos)


def frame_lines(ts_ns: int, stream: str, lines: bytes) -> bytes:
    """Full lines (`lines` ends with a newline) as CRI lines, each stamped `ts_ns`."""
    prefix = b"%s %s F " % (timestamp(ts_ns), stream.encode())
    body = lines[:-1].replace(b"\n", b"\n" + prefix)
    return prefix + body + b"\n"


def frame_partial(ts_ns: int, stream: str, fragment: bytes) -> bytes:
    """A fragment with no newline (yet) as one `P` line."""
    return b"%s %s P %s\n" % (timestamp(ts_ns), stream.encode(), fragment)


@dataclass(frozen=True)
class CriLine:
    """One parsed line of a CRI file."""

    ts: str  # RFC 3339 UTC as written (nanoseconds)
    stream: str
    partial: bool
    text: bytes

    @property
    def ts_micro(self) -> str:
        """The time with microseconds, as the API shows it (`2026-12-06T13:02:11.482113Z`)."""
        return self.ts[:26] + "Z" if len(self.ts) > 27 else self.ts


def parse(raw: bytes) -> CriLine | None:
    """A line of a CRI file without its newline, or None when it is not one (a torn or foreign
    line): readers skip it rather than fail."""
    parts = raw.split(b" ", 3)
    if len(parts) < 3:
        return None
    ts, stream, tag = parts[0], parts[1], parts[2]
    text = parts[3] if len(parts) == 4 else b""
    if stream not in (b"stdout", b"stderr") or tag[:1] not in (FULL, PARTIAL):
        return None
    if len(ts) < 20 or ts[4:5] != b"-" or ts[10:11] != b"T" or not ts.endswith(b"Z"):
        return None
    try:
        return CriLine(ts.decode("ascii"), stream.decode(), tag[:1] == PARTIAL, text)
    except UnicodeDecodeError:
        return None

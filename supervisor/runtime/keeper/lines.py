"""Cutting one stream's bytes into CRI lines, each stamped with the time its first byte was read.

Pure (no I/O, no clock): the keeper feeds what it read and the time it read it, and writes the
bytes it gets back. A pipe's reads end anywhere, mid-line included, so the assembler keeps the
unfinished tail and the time of its first byte. It writes:

- every full line as `F`, stamped with the read time of its first byte;
- a line longer than `MAX_FRAGMENT` as `P` fragments of exactly `MAX_FRAGMENT` bytes, then the
  rest as `F` (so the keeper never holds more than `MAX_FRAGMENT` bytes of a stream);
- an unfinished tail as `P` once it waited `HOLD_NS` without its newline (`due`): a prompt or a
  progress bar shows up, and a crash loses at most half a second of it;
- at EOF, an unfinished tail as `F` (`finish`): the line ended with its writer.

Why only one time is kept for the tail: the tail is never longer than `MAX_FRAGMENT`, so the next
cut (a newline, or `MAX_FRAGMENT` bytes) always falls at or after the start of the next read:
every line or fragment but the tail's own starts inside the newest read.
"""

from __future__ import annotations

from typing import Final

from supervisor.core import cri

MAX_FRAGMENT: Final = 16 * 1024
HOLD_NS: Final = 500_000_000


class LineAssembler:
    """One stream's unfinished line, between reads."""

    __slots__ = ("stream", "_tail", "_tail_ts")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._tail = b""
        self._tail_ts = 0

    @property
    def pending(self) -> int:
        """Bytes held: an unfinished line not written yet (at most MAX_FRAGMENT)."""
        return len(self._tail)

    def deadline(self) -> int | None:
        """When the pending tail must be written as `P` (ns, the clock of the read times), or
        None when nothing is pending."""
        return self._tail_ts + HOLD_NS if self._tail else None

    def feed(self, data: bytes, ts_ns: int) -> bytes:
        """The CRI bytes to write now for `data`, read at `ts_ns`; keeps the unfinished tail."""
        if not data:
            return b""
        out: list[bytes] = []
        start = 0
        if self._tail:
            start = self._complete_tail(data, out)
            if start < 0:
                return b""
        self._cut(data, start, ts_ns, out)
        return b"".join(out)

    def due(self, now_ns: int) -> bytes:
        """The pending tail as a `P` line when it waited HOLD_NS by `now_ns`, else nothing."""
        deadline = self.deadline()
        if deadline is None or now_ns < deadline:
            return b""
        return self._take_tail(partial=True)

    def finish(self) -> bytes:
        """At EOF: the pending tail as an `F` line (the line ended with its writer)."""
        return self._take_tail(partial=False) if self._tail else b""

    def _take_tail(self, *, partial: bool) -> bytes:
        tail, self._tail = self._tail, b""
        if partial:
            return cri.frame_partial(self._tail_ts, self.stream, tail)
        return cri.frame_lines(self._tail_ts, self.stream, tail + b"\n")

    def _complete_tail(self, data: bytes, out: list[bytes]) -> int:
        """Continue the tail with `data`: where the rest of `data` starts once the tail's line
        (or fragment) is written, or -1 when all of `data` joined the tail."""
        room = MAX_FRAGMENT - len(self._tail)
        newline = data.find(b"\n", 0, room + 1)
        if newline >= 0:
            out.append(
                cri.frame_lines(self._tail_ts, self.stream, self._tail + data[: newline + 1])
            )
            self._tail = b""
            return newline + 1
        if len(data) <= room:
            self._tail += data
            return -1
        out.append(cri.frame_partial(self._tail_ts, self.stream, self._tail + data[:room]))
        self._tail = b""
        return room

    def _cut(self, data: bytes, start: int, ts_ns: int, out: list[bytes]) -> None:
        """Frame `data[start:]` (no tail before it): full lines, long lines' fragments, and
        the rest as the new tail."""
        last = data.rfind(b"\n", start)
        if last >= 0:
            body = data[start : last + 1]
            if len(body) <= MAX_FRAGMENT + 1 or max(map(len, body.split(b"\n"))) <= MAX_FRAGMENT:
                out.append(cri.frame_lines(ts_ns, self.stream, body))
            else:
                self._long_lines(body, ts_ns, out)
            start = last + 1
        while len(data) - start > MAX_FRAGMENT:
            out.append(cri.frame_partial(ts_ns, self.stream, data[start : start + MAX_FRAGMENT]))
            start += MAX_FRAGMENT
        if start < len(data):
            self._tail, self._tail_ts = data[start:], ts_ns

    def _long_lines(self, body: bytes, ts_ns: int, out: list[bytes]) -> None:
        """Full lines of which some are over MAX_FRAGMENT: those are cut (rare, slow path)."""
        for line in body[:-1].split(b"\n"):
            while len(line) > MAX_FRAGMENT:
                out.append(cri.frame_partial(ts_ns, self.stream, line[:MAX_FRAGMENT]))
                line = line[MAX_FRAGMENT:]
            out.append(cri.frame_lines(ts_ns, self.stream, line + b"\n"))

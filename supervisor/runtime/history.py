"""Each formation's recent figures (CPU, memory, restarts, proxied requests per second), kept
in memory for the dashboard's charts: one sample per telemetry tick (5 s), the last hour.

Bounded twice: a `deque(maxlen=SAMPLES)` per formation, and only formations that still have a
route (a deleted one is forgotten on the next tick). A sample is kept packed in 28 bytes
(`struct`), not as a tuple of Python numbers: 720 samples x 100 formations take about 5 MB
so, where tuples took 14.5 MB. Nothing is written to disk: a restart
of fsup starts the history anew, which is what a glance at the last hour needs.

The figures are read by the telemetry tick (`telemetry.publish_fleet_stats`), which already
runs every 5 s for the traffic rates: the processes' CPU and memory are read there too, in a
worker thread (psutil reads /proc), for the formations that are serving only.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import psutil

INTERVAL_S = 5
SAMPLES = 720  # an hour at one sample every INTERVAL_S
# t (double), cpu_percent (float, NaN for None), rss_bytes (-1 for None), restarts,
# requests_per_s: what `Sample.pack` writes.
PACKED = struct.Struct("<dfqIf")


class Sample(NamedTuple):
    """One tick's figures of one formation (None: no process to read, or it could not be)."""

    t: float  # unix seconds
    cpu_percent: float | None
    rss_bytes: int | None
    restarts: int  # since fsup started (or the formation was deployed)
    requests_per_s: float

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    def pack(self) -> bytes:
        cpu = math.nan if self.cpu_percent is None else self.cpu_percent
        rss = -1 if self.rss_bytes is None else self.rss_bytes
        return PACKED.pack(self.t, cpu, rss, min(self.restarts, 2**32 - 1), self.requests_per_s)

    @classmethod
    def unpack(cls, packed: bytes) -> Sample:
        """The sample `pack` wrote, its floats rounded as they were taken (float32 keeps 7
        digits: 0.1 % and 0.001 requests/s come back as given)."""
        t, cpu, rss, restarts, rate = PACKED.unpack(packed)
        return cls(
            t,
            None if math.isnan(cpu) else round(cpu, 1),
            None if rss < 0 else rss,
            restarts,
            round(rate, 3),
        )


class History:
    """Per formation, its last `SAMPLES` samples, oldest first."""

    def __init__(self, samples: int = SAMPLES) -> None:
        self._samples = samples
        self._by_formation: dict[str, deque[bytes]] = {}

    def record(self, formation_id: str, sample: Sample) -> None:
        kept = self._by_formation.get(formation_id)
        if kept is None:
            kept = self._by_formation[formation_id] = deque(maxlen=self._samples)
        kept.append(sample.pack())

    def keep_only(self, formation_ids: Iterable[str]) -> None:
        """Forget the formations not named (deleted)."""
        alive = set(formation_ids)
        for formation_id in [f for f in self._by_formation if f not in alive]:
            del self._by_formation[formation_id]

    def __contains__(self, formation_id: object) -> bool:
        return formation_id in self._by_formation

    def samples(self, formation_id: str, last: int | None = None) -> list[Sample]:
        """The formation's samples, oldest first: all of them, or the `last` ones."""
        kept = self._by_formation.get(formation_id, ())
        start = 0 if last is None else max(0, len(kept) - last)
        return [Sample.unpack(packed) for packed in itertools.islice(kept, start, None)]

    def fleet(self, last: int) -> dict[str, list[Sample]]:
        """Every formation's `last` samples."""
        return {fid: self.samples(fid, last) for fid in self._by_formation}


class ProcessSampler:
    """CPU and memory of the processes named at each call, psutil objects kept between calls
    (`cpu_percent` is measured since the previous look at the same object) and forgotten as
    soon as a call no longer names their pid: bounded by the processes serving.

    Blocking (psutil reads /proc): call it from a worker thread, one call at a time."""

    def __init__(self) -> None:
        self._watched: dict[int, psutil.Process] = {}

    def read(self, pids: Mapping[str, int]) -> dict[str, tuple[float | None, int | None]]:
        """(cpu_percent, rss_bytes) by formation id; (None, None) for a process gone, and no
        CPU figure yet at the first look at a process."""
        named = set(pids.values())
        for pid in [p for p in self._watched if p not in named]:
            del self._watched[pid]
        return {formation_id: self._figures(pid) for formation_id, pid in pids.items()}

    def _figures(self, pid: int) -> tuple[float | None, int | None]:
        try:
            proc = self._watched.get(pid)
            first = proc is None
            if proc is None:
                proc = self._watched[pid] = psutil.Process(pid)
            with proc.oneshot():
                cpu = proc.cpu_percent(interval=None)  # 0.0 the first time: not a figure
                return None if first else round(cpu, 1), proc.memory_info().rss
        except psutil.Error:
            self._watched.pop(pid, None)
            return None, None

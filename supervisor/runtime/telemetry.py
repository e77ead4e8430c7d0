"""Periodic fleet events on the bus: `routing_stats` (the routing summary) and
`traffic_stats` (proxied requests per formation, with rates over the last period); on the
same tick, when given a `history`, each formation's sample for the dashboard's charts
(`runtime.history`); and, on the same clock, the heap's free pages given back to the system
once a minute.

Why the last: glibc keeps what a program frees in its heaps (two at most since `fsup serve`
caps them: `supervisor.cli.serve.tune_heap`) and reuses it, but pages once touched stay
resident. Under churn (requests, searches in
threads, updates unpacking bundles) the free holes are touched again and again, and fsup's
RSS crept up by megabytes over minutes with no object alive to show for it (issue 17).
`malloc_trim(0)` hands the free pages back (a few milliseconds); elsewhere than glibc there is
nothing to call and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from supervisor.core.ticks import next_on_grid
from supervisor.runtime.events import EventBus
from supervisor.runtime.history import History, ProcessSampler, Sample
from supervisor.runtime.metrics import Metrics
from supervisor.runtime.routing import RouteTable

log = logging.getLogger("fsup.telemetry")

PERIOD_S = 5.0
TRIM_EVERY_S = 60.0


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


def release_free_heap() -> bool:
    """Give the heap's free pages back to the system; False where there is no glibc."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


@dataclass
class HistoryKeeping:
    """What the tick needs to keep the history: the store, the restarts' tallies, and the
    psutil objects kept from one tick to the next."""

    history: History
    metrics: Metrics
    sampler: ProcessSampler = field(default_factory=ProcessSampler)

    async def sample(self, routes: RouteTable, rates: dict[str, dict[str, Any]]) -> None:
        """One sample per formation that has a route; CPU and memory of the serving ones,
        read in a worker thread; the deleted ones forgotten."""
        formation_ids = [route.formation_id for route in routes.routes()]
        pids = {r.formation_id: r.backend.pid for r in routes.routes() if r.backend is not None}
        figures = await trio.to_thread.run_sync(self.sampler.read, pids) if pids else {}
        now = round(time.time(), 3)
        for formation_id in formation_ids:
            cpu, rss = figures.get(formation_id, (None, None))
            tally = self.metrics.formations.get(formation_id)
            restarts = sum(tally.restarts.values()) if tally is not None else 0
            rate = rates.get(formation_id, {}).get("requests_per_s", 0.0)
            self.history.record(formation_id, Sample(now, cpu, rss, restarts, rate))
        self.history.keep_only(formation_ids)


async def publish_fleet_stats(
    bus: EventBus,
    routes: RouteTable,
    period: float = PERIOD_S,
    keeping: HistoryKeeping | None = None,
) -> None:
    """Runs until cancelled (the server's nursery owns it)."""
    previous: dict[str, int] = {}
    trimmed = trio.current_time()
    while True:
        await trio.sleep_until(next_on_grid(trio.current_time(), period))  # with the others
        if trio.current_time() - trimmed >= TRIM_EVERY_S:
            trimmed = trio.current_time()
            release_free_heap()
        bus.publish("routing_stats", routes.summary(trio.current_time()))
        traffic = routes.traffic()
        per_formation = {
            formation_id: {
                **counts,
                "requests_per_s": round(
                    max(0, counts["served"] - previous.get(formation_id, 0)) / period, 3
                ),
            }
            for formation_id, counts in traffic.items()
        }
        previous = {fid: counts["served"] for fid, counts in traffic.items()}
        bus.publish(
            "traffic_stats",
            {
                "formations": per_formation,
                "served": sum(c["served"] for c in traffic.values()),
                "in_flight": sum(c["in_flight"] for c in traffic.values()),
            },
        )
        if keeping is not None:
            try:
                await keeping.sample(routes, per_formation)
            except Exception:  # a chart missing a sample must not stop fsup's ticks
                log.exception("history sample failed; trying again in %ss", period)

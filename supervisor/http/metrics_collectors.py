"""The collectors behind `/metrics`: each reads live state when it is scraped, and nothing
runs between scrapes.

- `TallyCollector`: what happened, from the tallies the proxy and the formation actors keep
  (`runtime.metrics`): restarts by reason, health checks by result and their duration,
  proxied requests, their duration, in flight, held, hold duration, retries, upstream errors
  by kind.
- `BusCollector`: the event stream's subscribers and evictions (`runtime.events`).
- `FleetCollector`: each formation as it is now: info (version), state, up, and its process's
  start time, CPU seconds, resident memory and open fds. Its figures are gathered before the
  scrape (`gather_fleet`): the formations are asked through their actors, as the listing
  asks them, and psutil reads /proc in a worker thread.

Names follow Prometheus's conventions: `fsup_` first, base units (seconds, bytes), `_total`
on counters only (prometheus_client adds it), bounded labels, no timestamp in a label.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from supervisor.runtime.events import EventBus
from supervisor.runtime.metrics import Histogram, Metrics

# The formation states (`actors.formation.machine.lifecycle.State`) and `unknown`, for a
# formation whose actor did not answer the scrape in time (as the listing shows it).
STATES = ("starting", "running", "stopping", "stopped", "restarting", "crashed", "unknown")
F = ["formation"]


class TallyCollector(Collector):
    """Counters and histograms of what happened, per formation."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # registered without a collect; names are checked by the tests instead

    def collect(self) -> Iterator[Metric]:
        tallies = sorted(self.metrics.formations.items())
        yield self._counter(
            "fsup_formation_restarts",
            "Restarts of the formation's process, by reason: crash (it exited or failed its "
            "start), health (failed health checks), manual (a restart asked for), update "
            "(an update or rollback swapped it)",
            ["formation", "reason"],
            ((fid, reason, n) for fid, t in tallies for reason, n in t.restarts.items()),
        )
        yield self._counter(
            "fsup_health_checks",
            "Health checks of the formation's processes, by result: ok or failed",
            ["formation", "result"],
            ((fid, result, n) for fid, t in tallies for result, n in t.checks.items()),
        )
        yield _histogram(
            "fsup_health_check_duration_seconds",
            "Seconds a health check of the formation's process took",
            ((fid, t.check_duration) for fid, t in tallies),
        )
        yield self._counter(
            "fsup_updates",
            "Updates and rollbacks of the formation (kind), by outcome: succeeded or failed",
            ["formation", "kind", "outcome"],
            ((fid, *key, n) for fid, t in tallies for key, n in t.jobs.items()),
        )
        jobs = HistogramMetricFamily(
            "fsup_update_duration_seconds",
            "Seconds from an update's or rollback's request until its answer",
            labels=["formation", "kind"],
        )
        for fid, t in tallies:
            for kind, histogram in t.job_duration.items():
                jobs.add_metric([fid, kind], list(histogram.cumulative()), histogram.total)
        yield jobs
        yield self._counter(
            "fsup_deploys",
            "First deploys, by outcome: succeeded (running and healthy) or failed (undone)",
            ["outcome"],
            sorted(self.metrics.deploys.items()),
        )
        deploys = HistogramMetricFamily(
            "fsup_deploy_duration_seconds",
            "Seconds from a first deploy's start until its answer",
            labels=[],
        )
        duration = self.metrics.deploy_duration
        deploys.add_metric([], list(duration.cumulative()), duration.total)
        yield deploys
        yield self._counter(
            "fsup_proxy_requests",
            "Requests proxied to the formation, by method and status code",
            ["formation", "method", "code"],
            ((fid, *key, n) for fid, t in tallies for key, n in sorted(t.requests.items())),
        )
        yield _histogram(
            "fsup_proxy_request_duration_seconds",
            "Seconds from a proxied request's arrival until its answer's end",
            ((fid, t.duration) for fid, t in tallies),
        )
        in_flight = GaugeMetricFamily(
            "fsup_proxy_requests_in_flight", "Proxied requests not yet answered", labels=F
        )
        for fid, t in tallies:
            in_flight.add_metric([fid], t.in_flight)
        yield in_flight
        yield self._counter(
            "fsup_proxy_requests_held",
            "Proxied requests held while the formation was coming back",
            F,
            ((fid, t.held) for fid, t in tallies),
        )
        yield _histogram(
            "fsup_proxy_hold_duration_seconds",
            "Seconds a held request waited for the formation to serve again",
            ((fid, t.hold) for fid, t in tallies),
        )
        yield self._counter(
            "fsup_proxy_retries",
            "Proxied requests sent again after a refused or reset connection",
            F,
            ((fid, t.retries) for fid, t in tallies),
        )
        yield self._counter(
            "fsup_proxy_upstream_errors",
            "Failures talking to the formation's process, by kind: connect, read, write, "
            "protocol, framing, timeout, request",
            ["formation", "kind"],
            ((fid, kind, n) for fid, t in tallies for kind, n in t.upstream_errors.items()),
        )

    @staticmethod
    def _counter(
        name: str, doc: str, labels: list[str], rows: Iterable[tuple[Any, ...]]
    ) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=labels)
        for *values, count in rows:
            family.add_metric([str(v) for v in values], count)
        return family


def _histogram(name: str, doc: str, rows: Iterable[tuple[str, Histogram]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=F)
    for fid, histogram in rows:
        family.add_metric([fid], list(histogram.cumulative()), histogram.total)
    return family


class BusCollector(Collector):
    """The event stream (`/api/v1/events`, `/rpc/events`): who listens, who was dropped."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        stats = self.bus.statistics()
        yield GaugeMetricFamily(
            "fsup_sse_subscribers", "Clients of the event stream now", value=stats["subscribers"]
        )
        yield CounterMetricFamily(
            "fsup_sse_evictions",
            "Event stream clients dropped because they fell behind",
            value=stats["dropped"],
        )


@dataclass(frozen=True)
class FormationFacts:
    """One formation as a scrape finds it (the figures are None without a live process)."""

    formation_id: str
    version: str
    state: str
    up: bool
    start_time: float | None = None
    cpu_seconds: float | None = None
    rss_bytes: int | None = None
    open_fds: int | None = None


def facts_of(snapshot: dict[str, Any]) -> FormationFacts:
    """A formation's facts from its listing entry (without its process's figures)."""
    state = snapshot.get("status")
    state = state if state in STATES else "unknown"
    up = state == "running" and snapshot.get("healthy") is True
    return FormationFacts(str(snapshot["id"]), str(snapshot.get("version") or ""), state, up)


def with_process(facts: FormationFacts, pid: int) -> FormationFacts:
    """`facts` with its process's figures from /proc (blocking: run in a thread). CPU
    seconds are the process's own and those of the children it has reaped, so the counter
    only grows for one process; a new process starts it again (a counter reset, which
    Prometheus's `rate` handles)."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            cpu = proc.cpu_times()
            return FormationFacts(
                facts.formation_id,
                facts.version,
                facts.state,
                facts.up,
                start_time=proc.create_time(),
                cpu_seconds=cpu.user + cpu.system + cpu.children_user + cpu.children_system,
                rss_bytes=proc.memory_info().rss,
                open_fds=proc.num_fds(),
            )
    except psutil.Error:
        return facts  # gone between the listing and this look


def read_fleet(snapshots: list[dict[str, Any]]) -> list[FormationFacts]:
    """Every formation's facts, its process's figures read where it has one that is not
    stopped (blocking: run in a thread)."""
    found = []
    for snapshot in snapshots:
        facts = facts_of(snapshot)
        pid = snapshot.get("pid")
        if isinstance(pid, int) and facts.state not in ("stopped", "unknown"):
            facts = with_process(facts, pid)
        found.append(facts)
    return found


class FleetCollector(Collector):
    """The formations as gathered for this scrape (made per scrape, never registered)."""

    def __init__(self, fleet: list[FormationFacts], searches_running: int | None) -> None:
        self.fleet = sorted(fleet, key=lambda facts: facts.formation_id)
        self.searches_running = searches_running

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "fsup_formation_info",
            "Always 1: the formation and the version it serves",
            labels=["formation", "version"],
        )
        state = GaugeMetricFamily(
            "fsup_formation_state",
            "1 for the formation's current state, 0 for the others",
            labels=["formation", "state"],
        )
        up = GaugeMetricFamily(
            "fsup_formation_up", "1 when the process runs and passes its health check", labels=F
        )
        for facts in self.fleet:
            info.add_metric([facts.formation_id, facts.version], 1)
            for name in STATES:
                state.add_metric([facts.formation_id, name], 1 if name == facts.state else 0)
            up.add_metric([facts.formation_id], 1 if facts.up else 0)
        yield from (info, state, up)
        yield from self._process_figures()
        if self.searches_running is not None:
            yield GaugeMetricFamily(
                "fsup_searches_running", "Log searches running now", value=self.searches_running
            )

    def _process_figures(self) -> Iterator[Metric]:
        start = GaugeMetricFamily(
            "fsup_formation_start_time_seconds",
            "When the formation's process started, seconds since the Unix epoch",
            labels=F,
        )
        cpu = CounterMetricFamily(
            "fsup_formation_cpu_seconds",
            "CPU seconds (user and system) of the formation's process and its reaped children",
            labels=F,
        )
        rss = GaugeMetricFamily(
            "fsup_formation_resident_memory_bytes",
            "Resident memory of the formation's process, bytes",
            labels=F,
        )
        fds = GaugeMetricFamily(
            "fsup_formation_open_fds", "File descriptors the formation's process holds", labels=F
        )
        for facts in self.fleet:
            if facts.start_time is None:
                continue
            label = [facts.formation_id]
            start.add_metric(label, facts.start_time)
            cpu.add_metric(label, facts.cpu_seconds or 0.0)
            rss.add_metric(label, facts.rss_bytes or 0)
            fds.add_metric(label, facts.open_fds or 0)
        yield from (start, cpu, rss, fds)


class Scrape(Collector):
    """What one scrape exposes: the app's registry and the collectors made for this scrape,
    as one collector for prometheus_client's encoders."""

    def __init__(self, *collectors: Collector) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()

"""What happens, tallied where it happens: the counters and histograms behind `/metrics`.

The proxy counts each request (by normalised method and status code), its duration, the
requests in flight, held and retried, and the upstream failures by kind; a formation's driver
counts its restarts by reason. These are plain integers in small objects, incremented on the
trio thread with no lock and no call into a metrics library: a proxied request pays a few
attribute updates and one bisect, and nothing runs while nothing happens. The HTTP layer
(`http.metrics_collectors`) turns them into Prometheus families when it is scraped, and
forgets the tallies of formations that no longer exist there.

Labels stay bounded: a tally exists only for a formation that has a route (the proxy counts a
request once its route is found, never for a path's arbitrary id), the method is one of eight
values, the status code one of 100-599 or `other`, the reason and the kind each from a fixed
vocabulary.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

# Methods a label may name; any other (WebDAV's, made-up ones) is `other`.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Why a formation's process was replaced: it exited (or failed its start) unexpectedly, it
# failed its health checks (or a stranger took its port), a restart was asked for, or an
# update or rollback swapped it for another version.
RESTART_REASONS = ("crash", "health", "manual", "update")
# Upstream failures by kind (`http.upstream`'s exception classes).
UPSTREAM_KINDS = ("connect", "read", "write", "protocol", "framing", "timeout", "request")
# Seconds; Prometheus's client defaults, widened to a minute for slow answers and long holds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HOLD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A health check's result: answered as it should, or not (refused, timed out, a bad status,
# a stranger on the port).
CHECK_RESULTS = ("ok", "failed")
CHECK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Updates and rollbacks (`kind`), by outcome: answered with the new version serving, or
# with an error (a failed check, a cancel, an interruption); their duration until then.
JOB_KINDS = ("update", "rollback")
JOB_OUTCOMES = ("succeeded", "failed")
JOB_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# `formation_state_changed` reasons, as the formation machine names them (docs/decisions.md,
# "Events"), mapped to the restart they mean when the formation enters `restarting`.
_AUTOMATIC = {"unhealthy": "health", "port_taken": "health"}
# Entering `starting` for this reason is a restart asked for (`POST .../restart`).
_MANUAL = "restart"
_SWAPS = frozenset({"formation_updated", "formation_rolled_back"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def code_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


def restart_reason(event_type: str, data: Mapping[str, Any]) -> str | None:
    """The restart an event of the formation means, if any: a move into `restarting` (the
    process went and the policy brings it back: `health` for failed checks, `crash` for any
    other exit), into `starting` for a restart asked for (`manual`), or a finished update or
    rollback (`update`). Every other event, and the start after a backoff, is no restart."""
    if event_type in _SWAPS:
        return "update"
    if event_type != "formation_state_changed":
        return None
    to, reason = data.get("to"), str(data.get("reason"))
    if to == "restarting":
        return _AUTOMATIC.get(reason, "crash")
    if to == "starting" and reason == _MANUAL:
        return "manual"
    return None


class Histogram:
    """Counts per bucket (not cumulative: `cumulative` makes them so at scrape) and a sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> Iterator[tuple[str, int]]:
        """(`le`, count at or below it) for each bound, then `+Inf`."""
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            yield bound, running


@dataclass
class FormationTally:
    """One formation's counts since fsup started (or since it was deployed)."""

    restarts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESTART_REASONS, 0))
    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (method, code)
    duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))
    in_flight: int = 0
    held: int = 0
    hold: Histogram = field(default_factory=lambda: Histogram(HOLD_BUCKETS))
    retries: int = 0
    upstream_errors: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(UPSTREAM_KINDS, 0)
    )
    checks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHECK_RESULTS, 0))
    check_duration: Histogram = field(default_factory=lambda: Histogram(CHECK_BUCKETS))
    jobs: dict[tuple[str, str], int] = field(
        default_factory=lambda: {(k, o): 0 for k in JOB_KINDS for o in JOB_OUTCOMES}
    )
    job_duration: dict[str, Histogram] = field(
        default_factory=lambda: {kind: Histogram(JOB_BUCKETS) for kind in JOB_KINDS}
    )

    def answered(self, method: str, status: int, seconds: float) -> None:
        """A proxied request ended (its answer's last byte sent, or its client gone)."""
        key = (method_label(method), code_label(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.duration.observe(seconds)
        self.in_flight -= 1

    def job_ended(self, kind: str, succeeded: bool, seconds: float) -> None:
        """An update or rollback was answered (`kind` is one of `JOB_KINDS`)."""
        self.jobs[(kind, "succeeded" if succeeded else "failed")] += 1
        self.job_duration[kind].observe(seconds)

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind if kind in self.upstream_errors else "request"] += 1


class Metrics:
    """Every formation's tally, one object per server (shared by its HTTP edge and its
    formation actors)."""

    def __init__(self) -> None:
        self.formations: dict[str, FormationTally] = {}
        # First deploys, fleet-wide: a failed one removes its formation (and its tally), so
        # they are counted without a formation label, by outcome.
        self.deploys: dict[str, int] = dict.fromkeys(JOB_OUTCOMES, 0)
        self.deploy_duration = Histogram(JOB_BUCKETS)

    def deploy_ended(self, succeeded: bool, seconds: float) -> None:
        """A first deploy was answered: running and healthy, or undone."""
        self.deploys["succeeded" if succeeded else "failed"] += 1
        self.deploy_duration.observe(seconds)

    def formation(self, formation_id: str) -> FormationTally:
        tally = self.formations.get(formation_id)
        if tally is None:
            tally = self.formations[formation_id] = FormationTally()
        return tally

    def published(self, formation_id: str, event_type: str, data: Mapping[str, Any]) -> None:
        """A formation announced `event_type`: counted if it means a restart."""
        reason = restart_reason(event_type, data)
        if reason is not None:
            self.formation(formation_id).restarts[reason] += 1

    def keep_only(self, formation_ids: set[str]) -> None:
        """Forget the tallies of formations that are gone (deleted), unless a request of
        theirs is still in flight (its end will be counted on the tally it began on)."""
        for formation_id in [f for f in self.formations if f not in formation_ids]:
            if self.formations[formation_id].in_flight == 0:
                del self.formations[formation_id]


class Probe(Protocol):
    """`actors.health.Probe`: a health check of a port (None when it passed, else why not)."""

    async def check(self, port: int) -> str | None: ...


class MeteredProbe:
    """A formation's probe whose every check is counted on its tally, by result, with its
    duration (a check cancelled half-way is not). A stranger on the port (the probe raises)
    is a failed check."""

    def __init__(self, probe: Probe, tally: FormationTally) -> None:
        self.probe = probe
        self.tally = tally

    async def check(self, port: int) -> str | None:
        began = trio.current_time()
        result = "failed"
        try:
            error = await self.probe.check(port)
            result = "ok" if error is None else "failed"
            return error
        except trio.Cancelled:
            result = ""
            raise
        finally:
            if result:
                self.tally.checks[result] += 1
                self.tally.check_duration.observe(trio.current_time() - began)

    def close(self) -> None:
        """What the wrapped probe keeps between checks (`actors.health.close_probe`)."""
        close = getattr(self.probe, "close", None)
        if close is not None:
            close()

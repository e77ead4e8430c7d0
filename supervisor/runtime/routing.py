"""The proxy's routing table: which port serves each formation right now.

This is the one piece of state read outside an actor, on purpose: asking an actor on every
proxied request would put every request of a formation through one mailbox. Instead each
formation's actor is the only writer of its entry (publish on healthy, swap on update,
withdraw when it stops) and the proxy reads it synchronously. A read and the in-flight count
taken on the backend happen with no checkpoint in between, so under trio a request is either
counted on the old backend before a swap or sent to the new one after it: nothing falls
between the two, and the old process is stopped only once its count drains to zero.

The table also tells the proxy's upstream pool when a process stops serving (`retired`: its
port, on a withdrawal, a swap or a removal), so that idle keep-alive connections to it are
closed at once, and says whether fsup is still restoring its formations after its own start
(`restoring`), so that a request arriving then is held instead of answered 404.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

STALE_INTERVALS = 3
# How long a proxied request waits, by default, for a formation that is coming back.
DEFAULT_HOLD_S = 5.0
# Methods retried once after a refused or reset connection, unless a formation declares more.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Hold waits kept per formation for the summary's median and p99.
WAIT_SAMPLES = 1000


@dataclass(eq=False)
class Backend:
    """One process that can take proxied requests, with its in-flight count."""

    port: int
    pid: int
    version: str
    in_flight: int = 0
    served: int = 0
    _idle: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def acquire(self) -> None:
        self.in_flight += 1
        self.served += 1
        if self._idle.is_set():
            self._idle = trio.Event()

    def release(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drained(self) -> None:
        """Wait until no request is in flight (the caller bounds the wait)."""
        while self.in_flight:
            await self._idle.wait()


@dataclass
class HoldFigures:
    """What the proxy did for one formation while it was coming back (see `proxy_hold`)."""

    held: int = 0  # requests that waited for a backend
    served: int = 0  # ...that then went through
    expired: int = 0  # ...that got 503 at the bound, or when the formation stopped coming back
    retried: int = 0  # requests sent again after a refused or reset connection
    retry_failed: int = 0  # ...whose second attempt failed too
    waits: deque[float] = field(default_factory=lambda: deque(maxlen=WAIT_SAMPLES))

    def to_json(self) -> dict[str, Any]:
        waits = sorted(self.waits)
        return {
            "held": self.held,
            "served": self.served,
            "expired": self.expired,
            "retried": self.retried,
            "retry_failed": self.retry_failed,
            "wait_s": _spread(waits),
        }


@dataclass
class Route:
    formation_id: str
    backend: Backend | None = None
    # trio clock time of the last successful health check, and the check interval.
    last_healthy_at: float | None = None
    interval: float = 0.5
    # The formation is starting or restarting and meant to run: requests may wait for it.
    coming_back: bool = False
    hold_s: float = DEFAULT_HOLD_S
    idempotent: frozenset[str] = SAFE_METHODS
    figures: HoldFigures = field(default_factory=HoldFigures)
    # When the current restart backoff ends (trio time) and the restarts so far: what a held
    # request released at its bound is told (see `RouteTable.backoff`).
    backoff_until: float | None = None
    restarts: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)

    def changed(self) -> None:
        """Wake every request waiting on this route (a publish, a withdrawal, a new
        expectation, or the route's removal)."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()


class RouteTable:
    def __init__(
        self, retired: Callable[[int], None] | None = None, restoring: bool = False
    ) -> None:
        """`retired(port)`: called when the process on `port` stops serving. `restoring`: the
        server has yet to restore its formations (it calls `restored` when they are)."""
        self._routes: dict[str, Route] = {}
        self._retired = retired
        self.restoring = restoring
        self._registered = trio.Event()

    def register(self, formation_id: str) -> None:
        if formation_id not in self._routes:
            self._routes[formation_id] = Route(formation_id)
            self._wake_registered()

    def restored(self) -> None:
        """The restore is over: every route it brings exists; requests held for it decide."""
        if not self.restoring:
            return
        self.restoring = False
        self._wake_registered()
        for route in self._routes.values():
            route.changed()

    async def wait_registered(self) -> None:
        """Wait until a route is registered or the restore ends."""
        await self._registered.wait()

    def _wake_registered(self) -> None:
        self._registered.set()
        self._registered = trio.Event()

    def remove(self, formation_id: str) -> None:
        route = self._routes.pop(formation_id, None)
        if route is not None:
            route.coming_back = False
            self._retire(route.backend, None)
            route.changed()

    def _retire(self, previous: Backend | None, backend: Backend | None) -> None:
        if previous is not None and previous is not backend and self._retired is not None:
            self._retired(previous.port)

    def get(self, formation_id: str) -> Route | None:
        return self._routes.get(formation_id)

    def publish(self, formation_id: str, backend: Backend | None) -> Backend | None:
        """Point the route at `backend` (None: not serving); return the previous backend."""
        route = self._routes.get(formation_id)
        if route is None:
            return None
        previous, route.backend = route.backend, backend
        self._retire(previous, backend)
        route.changed()
        return previous

    def backoff(self, formation_id: str, until: float, restarts: int) -> None:
        """The formation waits until `until` (trio time) before its restart number
        `restarts`: a held request released meanwhile is told so, with the time left."""
        route = self._routes.get(formation_id)
        if route is not None:
            route.backoff_until, route.restarts = until, restarts

    def expect(self, formation_id: str, coming_back: bool) -> None:
        """Whether the formation is on its way (back) to running: the proxy holds requests
        while it is, and answers 503 at once when it is not."""
        route = self._routes.get(formation_id)
        if route is not None and route.coming_back != coming_back:
            route.coming_back = coming_back
            route.changed()

    def configure(self, formation_id: str, hold_s: float, idempotent: frozenset[str]) -> None:
        """The formation's own proxy settings (`proxy:` in formation.yaml)."""
        route = self._routes.get(formation_id)
        if route is not None:
            route.hold_s, route.idempotent = hold_s, SAFE_METHODS | idempotent

    def routes(self) -> list[Route]:
        return list(self._routes.values())

    def summary(self, now: float) -> dict[str, Any]:
        """The routing summary: routes, how many are healthy, how many are stale (serving
        but without a successful check for 3 intervals), and how old the checks are."""
        serving = [r for r in self._routes.values() if r.backend is not None]
        ages = sorted(now - r.last_healthy_at for r in serving if r.last_healthy_at is not None)
        stale = [
            r
            for r in serving
            if r.last_healthy_at is None or now - r.last_healthy_at > STALE_INTERVALS * r.interval
        ]
        return {
            "routes": len(self._routes),
            "serving": len(serving),
            "healthy": len(serving) - len(stale),
            "stale": len(stale),
            "refresh_age_s": {
                "min": round(ages[0], 3) if ages else None,
                "median": round(statistics.median(ages), 3) if ages else None,
                "max": round(ages[-1], 3) if ages else None,
            },
            "holding": self.hold_summary(),
        }

    def hold_summary(self) -> dict[str, Any]:
        """Held and retried requests over every formation, with the spread of hold waits."""
        figures = [r.figures for r in self._routes.values()]
        names = ("held", "served", "expired", "retried", "retry_failed")
        totals: dict[str, Any] = {n: sum(getattr(f, n) for f in figures) for n in names}
        totals["wait_s"] = _spread(sorted(w for f in figures for w in f.waits))
        return totals

    def traffic(self) -> dict[str, dict[str, int]]:
        """Requests served and in flight, per formation (its active backend), with the held
        and retried ones."""
        return {
            r.formation_id: {
                "served": r.backend.served,
                "in_flight": r.backend.in_flight,
                "held": r.figures.held,
                "retried": r.figures.retried,
            }
            for r in self._routes.values()
            if r.backend is not None
        }


def _spread(values: list[float]) -> dict[str, float | None]:
    """Median and p99 of sorted `values` (None when there are none)."""
    if not values:
        return {"median": None, "p99": None}
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return {"median": round(statistics.median(values), 4), "p99": round(p99, 4)}

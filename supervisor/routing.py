"""The proxy's routing table: which port serves each formation right now.

This is the one piece of state read outside an actor, on purpose: asking an actor on every
proxied request would put every request of a formation through one mailbox. Instead each
formation's actor is the only writer of its entry (publish on healthy, swap on update,
withdraw when it stops) and the proxy reads it synchronously. A read and the in-flight count
taken on the backend happen with no checkpoint in between, so under trio a request is either
counted on the old backend before a swap or sent to the new one after it: nothing falls
between the two, and the old process is stopped only once its count drains to zero.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import trio

STALE_INTERVALS = 3


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
class Route:
    formation_id: str
    backend: Backend | None = None
    # trio clock time of the last successful health check, and the check interval.
    last_healthy_at: float | None = None
    interval: float = 0.5


class RouteTable:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def register(self, formation_id: str) -> None:
        self._routes.setdefault(formation_id, Route(formation_id))

    def remove(self, formation_id: str) -> None:
        self._routes.pop(formation_id, None)

    def get(self, formation_id: str) -> Route | None:
        return self._routes.get(formation_id)

    def publish(self, formation_id: str, backend: Backend | None) -> Backend | None:
        """Point the route at `backend` (None: not serving); return the previous backend."""
        route = self._routes.get(formation_id)
        if route is None:
            return None
        previous, route.backend = route.backend, backend
        return previous

    def routes(self) -> list[Route]:
        return list(self._routes.values())

    def summary(self, now: float) -> dict[str, Any]:
        """The routing summary: routes, how many are healthy, how many are stale (serving
        but without a successful check for 3 intervals), and how old the checks are."""
        serving = [r for r in self._routes.values() if r.backend is not None]
        ages = sorted(now - r.last_healthy_at for r in serving if r.last_healthy_at is not None)
        stale = [r for r in serving if r.last_healthy_at is None
                 or now - r.last_healthy_at > STALE_INTERVALS * r.interval]
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
        }

    def traffic(self) -> dict[str, dict[str, int]]:
        """Requests served and in flight, per formation (its active backend)."""
        return {
            r.formation_id: {"served": r.backend.served, "in_flight": r.backend.in_flight}
            for r in self._routes.values() if r.backend is not None
        }

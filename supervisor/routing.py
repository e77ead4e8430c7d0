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

from dataclasses import dataclass, field

import trio


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
    # trio clock time of the last successful health check, for the routing summary.
    last_healthy_at: float | None = None


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

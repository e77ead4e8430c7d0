"""Holding proxied requests while a formation comes back, and retrying what is safe to retry.

A crashed formation is restarted within a fraction of a second; a request that arrives in
that fraction would fail although the formation is about to answer again. fsup owns both the
process and the route, so the proxy waits, bounded, for the route to serve again instead:

- A request for a formation that is `coming_back` (starting or restarting, meant to run)
  waits on the route's change event, never polls and never asks an actor, up to the
  formation's `hold_s`; then it goes through, or gets the usual 503 with `Retry-After`.
  A stopped or crashed formation answers at once, as before.
- Waiting costs the request itself and nothing more, and the number of held requests and
  their declared body bytes are capped over the whole server (`HoldGate`), so a flood against
  a formation that never comes back cannot pile up without bound.
- While fsup restores its formations after its own start, a request is held the same way,
  for a formation whose route is not registered yet too (never a 404 before the restored
  routes exist).
- A request released at the bound is told why the formation is not back (`HoldReason`: in
  restart backoff for how long more, still in its start gate, fsup restoring), with a
  `Retry-After` of the time really left where fsup knows it.
- A request whose connection is refused or reset before any byte of the answer came back is
  sent once more, to the next backend that serves (the failed one excluded), if its method is
  idempotent and its body, if any, was buffered.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import trio

from supervisor.http.upstream import RETRYABLE
from supervisor.runtime.metrics import FormationTally
from supervisor.runtime.routing import Backend, Route, RouteTable

MAX_HELD_REQUESTS = 1000
MAX_HELD_BYTES = 64 * 1024 * 1024
# Bodies up to this size of idempotent requests are buffered so that they can be sent again.
RETRY_BODY_LIMIT = 64 * 1024
# Failures that mean no byte of the answer came back (`upstream.RETRYABLE`, re-exported):
# the request can be sent again.
__all__ = [
    "RETRYABLE",
    "RETRY_BODY_LIMIT",
    "HoldGate",
    "HoldReason",
    "find_route",
    "hold_reason",
    "retryable",
    "wait_for_backend",
]


class HoldGate:
    """The server-wide bound on held requests and the body bytes they declare."""

    def __init__(self, max_requests: int = MAX_HELD_REQUESTS, max_bytes: int = MAX_HELD_BYTES):
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0

    @contextmanager
    def admit(self, size: int) -> Iterator[bool]:
        """Yields whether the request may be held; counted while the block runs."""
        if self.requests + 1 > self.max_requests or self.bytes + size > self.max_bytes:
            yield False
            return
        self.requests += 1
        self.bytes += size
        try:
            yield True
        finally:
            self.requests -= 1
            self.bytes -= size


def _usable(route: Route, failed: Backend | None) -> Backend | None:
    backend = route.backend
    return backend if backend is not None and backend is not failed else None


async def find_route(
    routes: RouteTable, formation_id: str, gate: HoldGate, size: int, bound: float
) -> Route | None:
    """The formation's route; while fsup is restoring, one not registered yet is waited for
    (within `bound` seconds, counted on `gate`). None: there is no such formation (or the
    restore did not bring it within the bound)."""
    route = routes.get(formation_id)
    if route is not None or not routes.restoring:
        return route
    with gate.admit(size) as admitted:
        if not admitted:
            return None
        with trio.move_on_after(bound):
            while routes.restoring and route is None:
                await routes.wait_registered()
                route = routes.get(formation_id)
    return route


async def wait_for_backend(
    routes: RouteTable,
    route: Route,
    gate: HoldGate,
    size: int,
    failed: Backend | None = None,
    started: float | None = None,
    tally: FormationTally | None = None,
) -> Backend | None:
    """The backend to send to: the route's, at once when it has one (other than `failed`);
    else, while the formation is coming back or fsup is restoring (or `failed` is still
    published, which its actor is about to withdraw), the first one published within
    `route.hold_s` of `started` (default: now). None when there is none to wait for, the
    wait timed out, or the gate is full. A wait is counted on `tally` (`/metrics`): held,
    and how long it lasted."""
    backend = _usable(route, failed)
    if backend is not None:
        return backend
    if not _worth_waiting(routes, route, failed):
        return None
    started = trio.current_time() if started is None else started
    with gate.admit(size) as admitted:
        if not admitted:
            return None
        route.figures.held += 1
        if tally is not None:
            tally.held += 1
        with trio.move_on_at(started + route.hold_s):
            while _worth_waiting(routes, route, failed):
                await route.wait_changed()
                backend = _usable(route, failed)
                if backend is not None:
                    route.figures.served += 1
                    _waited(route, tally, trio.current_time() - started)
                    return backend
        route.figures.expired += 1
        _waited(route, tally, trio.current_time() - started)
        return None


def _waited(route: Route, tally: FormationTally | None, seconds: float) -> None:
    route.figures.waits.append(seconds)
    if tally is not None:
        tally.hold.observe(seconds)


def _worth_waiting(routes: RouteTable, route: Route, failed: Backend | None) -> bool:
    if routes.get(route.formation_id) is not route:
        return False  # deleted
    return route.coming_back or routes.restoring or (failed is not None and route.backend is failed)


@dataclass(frozen=True)
class HoldReason:
    """Why a held request was released without a backend: `kind` is `backoff` (the restart
    waits `retry_after_s` more), `gate` (started, its health gate not passed yet),
    `restoring` (fsup is bringing back its formations) or `stopped` (no longer coming back:
    no `retry_after_s`)."""

    kind: str
    message: str
    retry_after_s: int | None

    def details(self) -> dict[str, Any]:
        return {"reason": self.kind, "retry_after_s": self.retry_after_s}


def hold_reason(routes: RouteTable, route: Route | None, now: float) -> HoldReason:
    """What a request released at its hold bound is told."""
    if route is None or routes.restoring:
        return HoldReason("restoring", "fsup is still restoring its formations after its start", 1)
    left = (route.backoff_until or 0.0) - now
    if route.coming_back and route.backend is None and left > 0:
        exits = f"{route.restarts} exit" + ("" if route.restarts == 1 else "s")
        return HoldReason(
            "backoff",
            f"it waits {left:.1f}s more in restart backoff, after {exits}",
            math.ceil(left),
        )
    if route.coming_back:
        return HoldReason("gate", "it is starting and its health check has not passed yet", 1)
    return HoldReason("stopped", "it stopped while the request waited", None)


def retryable(method: str, route: Route, body: bytes | None) -> bool:
    """Idempotent (by HTTP or by the formation's declaration) and with its body in hand."""
    return method in route.idempotent and body is not None

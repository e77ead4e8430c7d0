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
- A request whose connection is refused or reset before any byte of the answer came back is
  sent once more, to the next backend that serves (the failed one excluded), if its method is
  idempotent and its body, if any, was buffered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

from supervisor.http.upstream import RETRYABLE
from supervisor.runtime.routing import Backend, Route, RouteTable

MAX_HELD_REQUESTS = 1000
MAX_HELD_BYTES = 64 * 1024 * 1024
# Bodies up to this size of idempotent requests are buffered so that they can be sent again.
RETRY_BODY_LIMIT = 64 * 1024
# Failures that mean no byte of the answer came back (`upstream.RETRYABLE`, re-exported):
# the request can be sent again.
__all__ = ["RETRYABLE", "RETRY_BODY_LIMIT", "HoldGate", "retryable", "wait_for_backend"]


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


async def wait_for_backend(
    routes: RouteTable,
    route: Route,
    gate: HoldGate,
    size: int,
    failed: Backend | None = None,
) -> Backend | None:
    """The backend to send to: the route's, at once when it has one (other than `failed`);
    else, while the formation is coming back (or `failed` is still published, which its
    actor is about to withdraw), the first one published within `route.hold_s`. None when
    there is none to wait for, the wait timed out, or the gate is full."""
    backend = _usable(route, failed)
    if backend is not None:
        return backend
    if not _worth_waiting(routes, route, failed):
        return None
    started = trio.current_time()
    with gate.admit(size) as admitted:
        if not admitted:
            return None
        route.figures.held += 1
        with trio.move_on_at(started + route.hold_s):
            while _worth_waiting(routes, route, failed):
                await route.wait_changed()
                backend = _usable(route, failed)
                if backend is not None:
                    route.figures.served += 1
                    route.figures.waits.append(trio.current_time() - started)
                    return backend
        route.figures.expired += 1
        route.figures.waits.append(trio.current_time() - started)
        return None


def _worth_waiting(routes: RouteTable, route: Route, failed: Backend | None) -> bool:
    if routes.get(route.formation_id) is not route:
        return False  # deleted
    return route.coming_back or (failed is not None and route.backend is failed)


def retryable(method: str, route: Route, body: bytes | None) -> bool:
    """Idempotent (by HTTP or by the formation's declaration) and with its body in hand."""
    return method in route.idempotent and body is not None

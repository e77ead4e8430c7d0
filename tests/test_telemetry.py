"""Fleet stats events and the routing summary, on virtual time."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from supervisor.runtime import telemetry
from supervisor.runtime.events import EventBus
from supervisor.runtime.routing import Backend, RouteTable
from supervisor.runtime.telemetry import publish_fleet_stats


def test_routing_summary_counts_healthy_and_stale_routes() -> None:
    routes = RouteTable()
    for name in ("fresh", "old", "never", "stopped"):
        routes.register(name)
    for name in ("fresh", "old", "never"):
        routes.publish(name, Backend(8000, 1, "1.0.0"))
    routes.get("fresh").last_healthy_at = 99.0  # type: ignore[union-attr]
    routes.get("old").last_healthy_at = 90.0  # type: ignore[union-attr]
    summary = routes.summary(now=100.0)
    assert summary["routes"] == 4 and summary["serving"] == 3
    assert summary["healthy"] == 1 and summary["stale"] == 2
    assert summary["refresh_age_s"] == {"min": 1.0, "median": 5.5, "max": 10.0}


async def test_stats_are_published_every_period_with_rates(autojump_clock: Any) -> None:
    bus, routes = EventBus(), RouteTable()
    routes.register("web")
    backend = Backend(8000, 1, "1.0.0")
    routes.publish("web", backend)
    with bus.subscribe() as sub:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_fleet_stats, bus, routes, 5.0)
            for _ in range(20):
                backend.acquire()
                backend.release()
            await trio.sleep(5.5)
            nursery.cancel_scope.cancel()
        routing = sub.receive.receive_nowait()
        traffic = sub.receive.receive_nowait()
    assert routing.type == "routing_stats" and routing.data["routes"] == 1
    assert traffic.type == "traffic_stats" and traffic.data["served"] == 20
    assert traffic.data["formations"]["web"]["requests_per_s"] == 4.0


async def test_the_free_heap_is_given_back_once_a_minute(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: pages glibc keeps after frees crept into RSS under churn."""
    trims: list[float] = []
    monkeypatch.setattr(telemetry, "release_free_heap", lambda: trims.append(trio.current_time()))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish_fleet_stats, EventBus(), RouteTable(), 5.0)
        await trio.sleep(200)
        nursery.cancel_scope.cancel()
    assert len(trims) == 3
    assert [b - a for a, b in zip(trims, trims[1:], strict=False)] == [60.0, 60.0]


def test_giving_back_the_free_heap_is_safe_to_call() -> None:
    kept = [bytearray(4096) for _ in range(2000)]
    del kept[::2]
    assert telemetry.release_free_heap() in (True, False)  # False: not glibc

"""Periodic fleet events on the bus: `routing_stats` (the routing summary) and
`traffic_stats` (proxied requests per formation, with rates over the last period)."""

from __future__ import annotations

import trio

from supervisor.core.ticks import next_on_grid
from supervisor.runtime.events import EventBus
from supervisor.runtime.routing import RouteTable

PERIOD_S = 5.0


async def publish_fleet_stats(bus: EventBus, routes: RouteTable, period: float = PERIOD_S) -> None:
    """Runs until cancelled (the server's nursery owns it)."""
    previous: dict[str, int] = {}
    while True:
        await trio.sleep_until(next_on_grid(trio.current_time(), period))  # with the others
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

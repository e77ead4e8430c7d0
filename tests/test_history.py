"""The formations' history (`runtime.history`) and the tick that keeps it
(`telemetry.HistoryKeeping`), on virtual time with this test's own process as the one
serving."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import trio
from helpers import wait_until

from supervisor.runtime import telemetry
from supervisor.runtime.events import EventBus
from supervisor.runtime.history import INTERVAL_S, History, ProcessSampler, Sample
from supervisor.runtime.metrics import Metrics
from supervisor.runtime.routing import Backend, RouteTable
from supervisor.runtime.telemetry import HistoryKeeping, publish_fleet_stats


def sample(t: float, restarts: int = 0) -> Sample:
    return Sample(t, 1.0, 1000, restarts, 0.0)


def test_the_history_keeps_the_last_samples_oldest_first() -> None:
    history = History(samples=3)
    for t in range(5):
        history.record("web", sample(float(t)))
    assert [s.t for s in history.samples("web")] == [2.0, 3.0, 4.0]
    assert [s.t for s in history.samples("web", last=2)] == [3.0, 4.0]
    assert [s.t for s in history.samples("web", last=10)] == [2.0, 3.0, 4.0]
    assert history.samples("unknown") == []


def test_the_fleet_history_gives_each_formation_its_last_points() -> None:
    history = History()
    for t in range(4):
        history.record("a", sample(float(t)))
    history.record("b", sample(9.0))
    fleet = history.fleet(2)
    assert {fid: [s.t for s in samples] for fid, samples in fleet.items()} == {
        "a": [2.0, 3.0],
        "b": [9.0],
    }


def test_a_formation_not_kept_is_forgotten() -> None:
    history = History()
    history.record("a", sample(1.0))
    history.record("b", sample(1.0))
    history.keep_only(["b"])
    assert "a" not in history and "b" in history
    assert list(history.fleet(60)) == ["b"]


def test_a_sample_reads_as_the_api_gives_it() -> None:
    assert Sample(1.5, None, None, 2, 0.4).to_json() == {
        "t": 1.5,
        "cpu_percent": None,
        "rss_bytes": None,
        "restarts": 2,
        "requests_per_s": 0.4,
    }


def test_a_sample_comes_back_as_it_was_recorded() -> None:
    """Kept packed (28 bytes), a sample reads back the same: None stays None, the floats as
    rounded when taken, memory past 4 GiB whole."""
    history = History()
    recorded = [
        Sample(1796558532.347, None, None, 0, 0.0),
        Sample(1796558537.5, 12.3, 5 * 2**30, 3, 1.234),
    ]
    for one in recorded:
        history.record("web", one)
    assert history.samples("web") == recorded


def test_the_sampler_reads_live_processes_and_forgets_the_others() -> None:
    sampler = ProcessSampler()
    first = sampler.read({"me": os.getpid(), "gone": 2**22 + 12345})
    assert first["me"][0] is None and (first["me"][1] or 0) > 0  # no CPU figure at first
    assert first["gone"] == (None, None)
    second = sampler.read({"me": os.getpid()})
    assert isinstance(second["me"][0], float)
    assert sampler.read({}) == {}


async def test_each_tick_samples_every_formation_and_forgets_the_deleted(
    autojump_clock: Any,
) -> None:
    """The tick reads the processes in a worker thread, while the autojump clock moves on: the
    test waits for the samples a little virtual time at a time (each tick comes 5 s apart)."""
    routes, metrics, history = RouteTable(), Metrics(), History()
    for name in ("web", "idle", "gone"):
        routes.register(name)
    backend = Backend(8000, os.getpid(), "1.0.0")
    routes.publish("web", backend)
    metrics.published("web", "formation_state_changed", {"to": "restarting"})
    keeping = HistoryKeeping(history, metrics)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish_fleet_stats, EventBus(), routes, 5.0, keeping)
        for _ in range(10):
            backend.acquire()
            backend.release()
        await wait_until(lambda: len(history.samples("web")) >= 1, within=20, what="a tick")
        routes.remove("gone")
        await wait_until(lambda: len(history.samples("web")) >= 2, within=20, what="two ticks")
        nursery.cancel_scope.cancel()
    web = history.samples("web")[:2]
    assert web[0].t <= web[1].t
    assert web[0].requests_per_s == 2.0 and web[1].requests_per_s == 0.0
    assert web[0].cpu_percent is None and isinstance(web[1].cpu_percent, float)
    assert all(s.rss_bytes and s.rss_bytes > 0 for s in web)
    assert [s.restarts for s in web] == [1, 1]
    idle = history.samples("idle")[:2]
    assert [(s.cpu_percent, s.rss_bytes, s.requests_per_s) for s in idle] == [(None, None, 0.0)] * 2
    assert "gone" not in history


class BrokenSampler(ProcessSampler):
    def read(self, pids: Mapping[str, int]) -> dict[str, tuple[float | None, int | None]]:
        raise RuntimeError("psutil broke")


async def test_a_failed_sample_does_not_stop_the_ticks(autojump_clock: Any) -> None:
    bus, routes = EventBus(), RouteTable()
    routes.register("web")
    routes.publish("web", Backend(8000, os.getpid(), "1.0.0"))
    keeping = HistoryKeeping(History(), Metrics(), BrokenSampler())
    with bus.subscribe() as sub:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_fleet_stats, bus, routes, 5.0, keeping)
            seen = [(await sub.receive.receive()).type for _ in range(4)]
            nursery.cancel_scope.cancel()
    assert seen == ["routing_stats", "traffic_stats"] * 2
    assert keeping.history.samples("web") == []


def test_the_api_says_the_period_the_tick_samples_at() -> None:
    assert telemetry.PERIOD_S == INTERVAL_S

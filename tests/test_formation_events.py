"""FormationActor announces every transition and operation on the event bus (virtual time).

The tests await the events themselves (a bus subscription), never poll a snapshot.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from formation_fakes import (
    MANIFEST,
    FakeFleet,
    FakeLauncher,
    FakeProbe,
    World,
    staged_bundle,
    start,
)

from actors.base import ActorRef, spawn
from actors.formation import Rollback, Stop, Update
from actors.formation.machine.lifecycle import ALLOWED, State
from actors.supervision import Supervisor
from supervisor.core.manifest import parse_manifest
from supervisor.runtime.events import BusEvent, EventBus, Subscription


class Watch:
    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.seen: list[BusEvent] = []

    async def expect(self, type_: str, **data: Any) -> dict[str, Any]:
        with trio.fail_after(120):
            while True:
                event = await self.subscription.receive.receive()
                self.seen.append(event)
                if event.type == type_ and all(event.data.get(k) == v for k, v in data.items()):
                    assert event.search_id is None
                    return event.data

    def transitions(self) -> list[tuple[str, str, str]]:
        return [
            (e.data["from"], e.data["to"], e.data["reason"])
            for e in self.seen
            if e.type == "formation_state_changed"
        ]


@asynccontextmanager
async def watched(
    tmp_path: Path, healthy: Any = lambda: True
) -> AsyncIterator[tuple[World, ActorRef, Watch]]:
    world = World(tmp_path, FakeLauncher(), FakeProbe(healthy), parse_manifest(MANIFEST.encode()))
    world.ctx.rng = random.Random(1)
    bus = EventBus()
    world.ctx.events = bus
    world.ctx.routes.register("web")
    async with trio.open_nursery() as nursery:
        world.ctx.fleet = await spawn(nursery, FakeFleet())
        with bus.subscribe() as subscription:
            ref = await Supervisor(nursery).start("formation:web", world.actor)
            yield world, ref, Watch(subscription)
        nursery.cancel_scope.cancel()
    world.store.close()


async def test_every_transition_is_announced_and_allowed(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with watched(tmp_path) as (world, ref, watch):
        await start(ref)
        running = await watch.expect("formation_state_changed", to="running")
        assert running == {
            "formation_id": "web",
            "from": "starting",
            "to": "running",
            "reason": "healthy",
            "pid": 1000,
            "version": "1.0.0",
            "restart_count": 0,
        }
        world.launcher.last.exit(1)
        restarting = await watch.expect("formation_state_changed", to="restarting")
        assert restarting["reason"] == "exited" and restarting["restart_count"] == 1
        assert restarting["pid"] is None
        await watch.expect("formation_state_changed", to="running")
        await ref.ask(Stop())
        await watch.expect("formation_state_changed", to="stopped")
        assert watch.transitions() == [
            ("stopped", "starting", "start"),
            ("starting", "running", "healthy"),
            ("running", "restarting", "exited"),
            ("restarting", "starting", "backoff_elapsed"),
            ("starting", "running", "healthy"),
            ("running", "stopping", "stop"),
            ("stopping", "stopped", "stop"),
        ]
        for old, new, _ in watch.transitions():
            assert State(new) in ALLOWED[State(old)]


async def test_health_changes_are_announced_once_per_change(
    tmp_path: Path, autojump_clock: Any
) -> None:
    good = {"now": True}
    async with watched(tmp_path, healthy=lambda: good["now"]) as (_world, ref, watch):
        await start(ref)
        assert await watch.expect("formation_health_changed") == {
            "formation_id": "web",
            "healthy": True,
            "error": None,
        }
        good["now"] = False
        bad = await watch.expect("formation_health_changed")
        assert bad == {"formation_id": "web", "healthy": False, "error": "503"}
        stopping = await watch.expect("formation_state_changed", to="stopping")
        assert stopping["reason"] == "unhealthy"
        good["now"] = True
        await watch.expect("formation_health_changed", healthy=True)
        health = [e for e in watch.seen if e.type == "formation_health_changed"]
        assert [e.data["healthy"] for e in health] == [True, False, True]


async def test_update_and_rollback_are_announced(tmp_path: Path, autojump_clock: Any) -> None:
    async with watched(tmp_path) as (world, ref, watch):
        await start(ref)
        staged, spec, manifest = staged_bundle(tmp_path, "1.1.0")
        await ref.ask(Update(staged, spec, manifest))
        updated = await watch.expect("formation_updated")
        assert updated["version"] == "1.1.0" and updated["previous_version"] == "1.0.0"
        assert updated["pid"] == world.launcher.last.pid and updated["port"] == 9001
        first = world.store.version("web", "1.0.0")
        assert first is not None
        world.store.put_version(dataclasses.replace(first, manifest=MANIFEST.encode()))
        await ref.ask(Rollback())
        rolled = await watch.expect("formation_rolled_back")
        assert rolled["version"] == "1.0.0" and rolled["previous_version"] == "1.1.0"

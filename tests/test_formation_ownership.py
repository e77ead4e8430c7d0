"""The port belongs to the formation's own process tree: a stranger listening on it refuses a
start, fails a health check, blocks restarts and aborts an update (FormationActor on virtual
time, with fake listeners)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from formation_fakes import (
    running_world,
    staged_bundle,
    start,
    state_of,
    wait_state,
    world_with_fleet,
)

from actors.formation import (
    Snapshot,
    Update,
)
from actors.listener import FREE_GRACE_S
from supervisor.core.errors import FsupError


async def test_a_stranger_on_the_port_refuses_the_start(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with running_world(tmp_path) as (world, ref):
        world.listeners.squat(8001)
        with pytest.raises(FsupError) as info:
            await start(ref)
        error = info.value
        assert (error.code, error.status) == ("PORT_IN_USE", 409)
        assert "port 8001" in error.message and "pid 4242 (squatter)" in error.message
        assert "stop that process or free port 8001" in error.message
        assert error.details["pid"] == 4242 and error.details["process_name"] == "squatter"
        # Nothing was spawned; the check allowed a just-killed holder its grace first.
        assert world.launcher.spawned == []
        assert trio.current_time() == pytest.approx(FREE_GRACE_S, abs=0.11)
        snapshot = await ref.ask(Snapshot())
        assert snapshot["status"] == "crashed" and snapshot["healthy"] is None
        route = world.ctx.routes.get("web")
        assert route is None or route.backend is None
        # The operator frees the port: the next start works.
        del world.listeners.strangers[8001]
        _, result = await start(ref)
        assert result["status"] == "running"


async def test_a_port_held_only_a_moment_longer_is_waited_for(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with running_world(tmp_path) as (world, ref):
        world.listeners.squat(8001)

        async def let_go() -> None:
            await trio.sleep(FREE_GRACE_S / 2)  # a killed process closing its socket
            del world.listeners.strangers[8001]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(let_go)
            _, result = await start(ref)
        assert result["status"] == "running" and len(world.launcher.spawned) == 1


async def test_a_stranger_answering_the_health_check_fails_the_start_at_once(
    tmp_path: Path, autojump_clock: Any
) -> None:
    # Our process never answers; a stranger binds the port after the pre-spawn check.
    async with running_world(tmp_path, healthy=lambda: trio.current_time() >= 1.0) as (world, ref):

        async def squat_soon() -> None:
            await trio.sleep(0.5)
            world.listeners.squat(8001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(squat_soon)
            with pytest.raises(FsupError) as info:
                await start(ref)
        assert info.value.code == "PORT_IN_USE" and info.value.details["stage"] == "health_check"
        assert trio.current_time() == pytest.approx(1.0)  # not the 5 s health timeout
        assert world.launcher.last.signals == [signal.SIGTERM]
        assert await state_of(ref) == "crashed"


async def test_ownership_is_checked_when_health_turns_good_not_on_every_probe(
    tmp_path: Path, autojump_clock: Any
) -> None:
    sick = {"from": float("inf"), "until": float("inf")}
    healthy = lambda: not sick["from"] <= trio.current_time() < sick["until"]  # noqa: E731
    async with running_world(tmp_path, healthy=healthy) as (world, ref):
        await start(ref)
        await trio.sleep(60)  # 120 healthy probes
        assert world.listeners.tree_checks() == 1  # the start's gate
        assert len(world.probe.checks) > 100
        now = trio.current_time()
        sick["from"], sick["until"] = now, now + 1
        await trio.sleep(3)
        assert world.listeners.tree_checks() == 2  # once more, when it recovered
        snapshot = await ref.ask(Snapshot())
        assert snapshot["healthy"] is True and snapshot["pid"] == world.launcher.last.pid


async def test_a_stranger_after_a_failure_stops_the_process_and_blocks_restarts(
    tmp_path: Path, autojump_clock: Any
) -> None:
    sick = {"from": float("inf"), "until": float("inf")}
    healthy = lambda: not sick["from"] <= trio.current_time() < sick["until"]  # noqa: E731
    async with running_world(tmp_path, healthy=healthy) as (world, ref):
        await start(ref)
        first = world.launcher.last
        # Our process stops answering; a stranger takes the port; the probe "recovers".
        now = trio.current_time()
        sick["from"], sick["until"] = now, now + 1
        world.listeners.squat(8001)
        with trio.fail_after(4):  # well before the 5 s health timeout would stop it
            while not first.signals:  # noqa: ASYNC110 - observing from outside
                await trio.sleep(0.1)
        assert trio.current_time() - now == pytest.approx(1.0, abs=0.6)  # not 5 s of timeout
        route = world.ctx.routes.get("web")
        assert route is None or route.backend is None
        await wait_state(ref, "crashed")  # every restart found the stranger before spawning
        assert len(world.launcher.spawned) == 1
        snapshot = await ref.ask(Snapshot())
        assert snapshot["healthy"] is None and snapshot["restart_count"] == 3


async def test_update_asks_for_another_staging_port_when_a_stranger_took_it(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with world_with_fleet(tmp_path, healthy=lambda: True) as (world, ref, fleet):
        await start(ref)
        world.listeners.squat(9001)
        staged, spec, manifest = staged_bundle(tmp_path, "1.1.0")
        result = await ref.ask(Update(staged, spec, manifest))
        assert result["version"] == "1.1.0" and result["port"] == 9002
        assert world.launcher.specs[-1].env["PORT"] == "9002"
        assert fleet.released == [9001, 8001]


async def test_update_gives_up_when_every_staging_port_is_taken(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with world_with_fleet(tmp_path, healthy=lambda: True) as (world, ref, fleet):
        await start(ref)
        old = world.launcher.last
        for port in (9001, 9002, 9003):
            world.listeners.squat(port)
        staged, spec, manifest = staged_bundle(tmp_path, "2.0.0")
        with pytest.raises(FsupError) as info:
            await ref.ask(Update(staged, spec, manifest))
        assert info.value.code == "PORT_IN_USE" and "port 9003" in info.value.message
        assert "1.0.0 keeps serving" in info.value.message
        assert len(world.launcher.spawned) == 1 and old.alive() and old.signals == []
        assert fleet.released == [9001, 9002, 9003]
        assert not world.home.version_dir("web", "2.0.0").exists()
        snapshot = await ref.ask(Snapshot())
        assert (snapshot["version"], snapshot["port"], snapshot["healthy"]) == ("1.0.0", 8001, True)


async def test_a_stranger_on_the_staging_port_aborts_the_update_before_the_swap(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with world_with_fleet(tmp_path, healthy=lambda: True) as (world, ref, fleet):
        await start(ref)
        old = world.launcher.last
        route = world.ctx.routes.get("web")
        assert route is not None and route.backend is not None
        # A stranger binds the staging port right after fsup checked it and spawned there
        # (installing runs in threads, which moves virtual time: so no timed task here).
        world.launcher.on_spawn = lambda spec: world.listeners.squat(int(spec.env["PORT"]))
        staged, spec, manifest = staged_bundle(tmp_path, "2.0.0")
        with pytest.raises(FsupError) as info:
            await ref.ask(Update(staged, spec, manifest))
        assert info.value.code == "PORT_IN_USE" and "1.0.0 keeps serving" in info.value.message
        assert (info.value.details["stage"], info.value.details["port"]) == ("health_check", 9001)
        assert world.launcher.last.signals == [signal.SIGTERM] and old.alive()
        assert route.backend is not None and route.backend.pid == old.pid
        assert fleet.released == [9001]
        snapshot = await ref.ask(Snapshot())
        assert (snapshot["version"], snapshot["pid"]) == ("1.0.0", old.pid)

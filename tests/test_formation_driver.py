"""FormationActor, the driver, on virtual time with fakes: the operations that the older actor
tests left out (rollback, cancel-update, shutdown, ensure-running, probe-now, an offline
update, FORMATION_BUSY). Waits are on the bus's events, never on a polled snapshot.
"""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from formation_fakes import MANIFEST, staged_bundle, start
from test_formation_events import watched

from actors.formation import (
    CancelUpdate,
    EnsureRunning,
    Nodes,
    ProbeNow,
    Rollback,
    Shutdown,
    Snapshot,
    Stop,
    Update,
)
from supervisor.core.errors import FsupError


def _with_stored_manifest(world: Any) -> None:
    first = world.store.version("web", "1.0.0")
    assert first is not None
    world.store.put_version(dataclasses.replace(first, manifest=MANIFEST.encode()))


async def test_rollback_goes_back_blue_green(tmp_path: Path, autojump_clock: Any) -> None:
    async with watched(tmp_path) as (world, ref, watch):
        _with_stored_manifest(world)
        with pytest.raises(FsupError) as none_below:
            await ref.ask(Rollback())
        assert none_below.value.code == "NO_PREVIOUS_VERSION"
        await start(ref)
        first = world.launcher.last
        staged, spec, manifest = staged_bundle(tmp_path, "1.1.0")
        await ref.ask(Update(staged, spec, manifest))
        second = world.launcher.last
        assert first.signals == [signal.SIGTERM]
        result = await ref.ask(Rollback())
        assert result["version"] == "1.0.0" and result["previous_version"] == "1.1.0"
        assert second.signals == [signal.SIGTERM] and world.launcher.last.alive()
        await watch.expect("formation_rolled_back", version="1.0.0")
        assert (await ref.ask(Snapshot()))["versions"] == ["1.0.0", "1.1.0"]


async def test_cancel_update_gives_everything_back(tmp_path: Path, autojump_clock: Any) -> None:
    async with watched(tmp_path) as (world, ref, _watch):
        await start(ref)
        old = world.launcher.last
        world.probe.unhealthy_ports.add(9001)  # the staging process never gets healthy
        staged, spec, manifest = staged_bundle(tmp_path, "2.0.0")
        outcome: dict[str, Any] = {}
        staging = trio.Event()

        async def update() -> None:
            with (
                pytest.raises(FsupError) as info,
                await ref.request(Update(staged, spec, manifest)) as call,
            ):
                async for event in call.progress():
                    if event["stage"] == "spawning_staging":
                        staging.set()
                await call.result()
            outcome["error"] = info.value

        async with trio.open_nursery() as nursery:
            nursery.start_soon(update)
            await staging.wait()
            nodes = await ref.ask(Nodes())
            assert [n["role"] for n in nodes] == ["active", "staging"]
            cancelled = await ref.ask(CancelUpdate())
        assert cancelled == {"formation_id": "web", "cancelled": True, "version": "1.0.0"}
        assert outcome["error"].code == "OPERATION_CANCELLED"
        assert old.alive() and world.launcher.last.signals == [signal.SIGTERM]
        assert not world.home.version_dir("web", "2.0.0").exists()
        again = await ref.ask(CancelUpdate())
        assert again["cancelled"] is False and again["message"] == "no update in progress"


async def test_an_update_while_starting_is_busy(tmp_path: Path, autojump_clock: Any) -> None:
    async with watched(tmp_path, healthy=lambda: trio.current_time() >= 3) as (_w, ref, watch):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start, ref)
            await watch.expect("formation_state_changed", to="starting")
            staged, spec, manifest = staged_bundle(tmp_path, "2.0.0")
            with pytest.raises(FsupError) as busy:
                await ref.ask(Update(staged, spec, manifest))
        assert busy.value.code == "FORMATION_BUSY"


async def test_an_offline_update_switches_the_version_without_starting(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with watched(tmp_path) as (world, ref, watch):
        await start(ref)
        await ref.ask(Stop())
        spawned = len(world.launcher.spawned)
        staged, spec, manifest = staged_bundle(tmp_path, "2.0.0")
        result = await ref.ask(Update(staged, spec, manifest))
        assert result["status"] == "stopped" and result["version"] == "2.0.0"
        assert result["pid"] is None and len(world.launcher.spawned) == spawned
        await watch.expect("formation_updated", version="2.0.0", status="stopped")
        row = world.store.formation("web")
        assert row is not None and row.current_version == "2.0.0" and row.pid is None


async def test_shutdown_keeps_the_desired_state_and_ends_the_actor(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with watched(tmp_path) as (world, ref, watch):
        await start(ref)
        result = await ref.ask(Shutdown(keep_desired=True))
        assert result["status"] == "stopped"
        stopping = await watch.expect("formation_state_changed", to="stopping")
        assert stopping["reason"] == "shutdown"
        assert world.store.formation("web").desired == "running"  # type: ignore[union-attr]
        assert world.launcher.last.signals == [signal.SIGTERM]


async def test_delete_during_an_update_waits_for_its_cleanup(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with watched(tmp_path) as (world, ref, _watch):
        await start(ref)
        world.probe.unhealthy_ports.add(9001)
        staged, spec, manifest = staged_bundle(tmp_path, "2.0.0")
        staging = trio.Event()

        async def update() -> None:
            with (
                pytest.raises(FsupError) as info,
                await ref.request(Update(staged, spec, manifest)) as call,
            ):
                async for event in call.progress():
                    if event["stage"] == "spawning_staging":
                        staging.set()
                await call.result()
            assert info.value.code == "OPERATION_CANCELLED"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(update)
            await staging.wait()
            result = await ref.ask(Shutdown(keep_desired=False))
        assert result["status"] == "stopped"
        assert len(world.launcher.spawned) == 2
        assert all(not process.alive() for _, process in world.launcher.spawned)
        assert world.store.formation("web").desired == "stopped"  # type: ignore[union-attr]


async def test_ensure_running_starts_only_what_should_run(
    tmp_path: Path, autojump_clock: Any
) -> None:
    good = {"now": False}
    async with watched(tmp_path, healthy=lambda: good["now"]) as (world, ref, watch):
        assert await ref.ask(EnsureRunning()) is False  # a new formation: not yet meant to run
        with pytest.raises(FsupError):
            await start(ref)  # fails its health check
        await watch.expect("formation_state_changed", to="crashed")
        good["now"] = True
        assert await ref.ask(EnsureRunning()) is True  # meant to run, and crashed
        reconciled = await watch.expect("formation_state_changed", to="starting")
        assert reconciled["reason"] == "reconcile"
        await watch.expect("formation_state_changed", to="running")
        await ref.ask(Stop())
        assert await ref.ask(EnsureRunning()) is False  # stopped on purpose
        assert len(world.launcher.spawned) == 2


async def test_probe_now_checks_the_running_process_once(
    tmp_path: Path, autojump_clock: Any
) -> None:
    good = {"now": True}
    async with watched(tmp_path, healthy=lambda: good["now"]) as (_world, ref, watch):
        assert await ref.ask(ProbeNow()) == {"formation_id": "web", "probing": False}
        await start(ref)
        good["now"] = False
        assert await ref.ask(ProbeNow()) == {"formation_id": "web", "probing": True}
        bad = await watch.expect("formation_health_changed", healthy=False)
        assert bad["error"] == "503"

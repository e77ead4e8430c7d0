"""FormationActor's state machine on virtual time, with fake processes and probes.

Every timer (health intervals and timeouts, backoff, stop timeouts) is checked against exact
virtual times: `autojump_clock` jumps whenever all tasks are waiting.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.base import Actor, ActorCrashed, ActorRef, Reply, spawn
from actors.formation import (
    FormationActor,
    FormationContext,
    Kept,
    Restart,
    Snapshot,
    Start,
    Stop,
    Update,
)
from actors.listener import FREE_GRACE_S, Holder, PortOwners
from actors.port_requests import AllocatePort, ReleasePort
from actors.process import LaunchSpec
from actors.supervision import Supervisor
from supervisor.errors import FsupError
from supervisor.home import Home
from supervisor.manifest import FormationSpec, HealthSpec, parse_manifest
from supervisor.store import Store, VersionRow


class FakeProcess:
    def __init__(self, pid: int, ignores_term: bool = False) -> None:
        self.pid = pid
        self.started_at = time.time()
        self.ignores_term = ignores_term
        self.signals: list[int] = []
        self._code: int | None = None
        self._gone = trio.Event()

    @property
    def returncode(self) -> int | None:
        return self._code

    def alive(self) -> bool:
        return not self._gone.is_set()

    def exit(self, code: int) -> None:
        if self.alive():
            self._code = code
            self._gone.set()

    async def wait(self) -> int | None:
        await self._gone.wait()
        return self._code

    async def stop(self, signum: int, grace: float) -> int | None:
        self.signals.append(signum)
        if not self.ignores_term:
            self.exit(-signum)
        with trio.move_on_after(grace):
            await self.wait()
        if self.alive():
            self.signals.append(signal.SIGKILL)
            self.exit(-signal.SIGKILL)
        return self._code

    def kill_group(self) -> None:
        pass

    def stderr_tail(self) -> str:
        return "fake stderr\n"


class FakeLauncher:
    def __init__(self, ignores_term: bool = False) -> None:
        self.spawned: list[tuple[float, FakeProcess]] = []
        self.specs: list[LaunchSpec] = []
        self.ignores_term = ignores_term
        self.on_spawn: Callable[[LaunchSpec], None] = lambda spec: None

    async def spawn(self, spec: LaunchSpec) -> FakeProcess:
        self.on_spawn(spec)
        process = FakeProcess(1000 + len(self.spawned), self.ignores_term)
        self.spawned.append((trio.current_time(), process))
        self.specs.append(spec)
        return process

    @property
    def last(self) -> FakeProcess:
        return self.spawned[-1][1]


class FakeProbe:
    """Healthy when `healthy()` says so; counts its checks."""

    def __init__(self, healthy: Callable[[], bool]) -> None:
        self.healthy = healthy
        self.checks: list[float] = []
        self.unhealthy_ports: set[int] = set()

    async def check(self, port: int) -> str | None:
        self.checks.append(trio.current_time())
        return None if self.healthy() and port not in self.unhealthy_ports else "503"


class FakeListeners:
    """Who listens on a port: the process spawned on it (the formation's own), unless a
    stranger was put there with `squat`. Records every check (port, roots)."""

    def __init__(self) -> None:
        self.strangers: dict[int, Holder] = {}
        self.checks: list[tuple[int, tuple[int, ...]]] = []

    def squat(self, port: int, pid: int = 4242, name: str = "squatter") -> None:
        self.strangers[port] = Holder(pid, name)

    async def owners(self, port: int, roots: Collection[int]) -> PortOwners:
        self.checks.append((port, tuple(roots)))
        if port in self.strangers:
            return PortOwners(ours=False, foreign=(self.strangers[port],))
        return PortOwners(ours=bool(roots))

    def tree_checks(self) -> int:
        """Ownership checks of a running process (a pre-spawn check has no roots)."""
        return sum(1 for _, roots in self.checks if roots)


MANIFEST = """
id: web
version: 1.0.0
command: ["python3", "app.py"]
env: {A: b}
health: {http: /health, interval: 0.5, timeout: 5}
restart:
  policy: on-failure
  backoff: {initial: 1, factor: 2, max: 8, jitter: 0}
  reset_after: 30
  max_restarts: 3
  window: 100
stop: {timeout: 3}
"""


class World:
    def __init__(self, tmp: Path, launcher: FakeLauncher, probe: FakeProbe, spec: FormationSpec):
        self.home = Home(tmp)
        self.home.ensure()
        self.store = Store(self.home.state_db)
        self.store.insert_formation(
            spec.id, 8001, VersionRow(spec.id, spec.version, b"", str(tmp), "2026-01-01T00:00:00Z")
        )
        self.launcher = launcher
        self.probe = probe
        self.spec = spec
        self.kept = Kept()
        self.listeners = FakeListeners()
        self.ctx = FormationContext(
            self.home, self.store, launcher, lambda h: probe, "http://127.0.0.1:7890",
            random.Random(1), listeners=self.listeners,
        )

    def actor(self) -> FormationActor:
        return FormationActor(self.ctx, self.spec.id, self.spec, self.home.root, 8001, self.kept)


@asynccontextmanager
async def running_world(
    tmp_path: Path,
    healthy: Callable[[], bool] = lambda: True,
    manifest: str = MANIFEST,
    ignores_term: bool = False,
) -> AsyncIterator[tuple[World, ActorRef]]:
    world = World(tmp_path, FakeLauncher(ignores_term), FakeProbe(healthy), parse_manifest(manifest.encode()))
    async with trio.open_nursery() as nursery:
        ref = await Supervisor(nursery).start("formation:web", world.actor)
        yield world, ref
        nursery.cancel_scope.cancel()
    world.store.close()


async def start(ref: ActorRef) -> tuple[list[dict[str, Any]], Any]:
    with await ref.request(Start()) as call:
        events = [e async for e in call.progress()]
        return events, await call.result()


async def state_of(ref: ActorRef) -> str:
    return (await ref.ask(Snapshot()))["status"]  # type: ignore[no-any-return]


async def wait_state(ref: ActorRef, wanted: str) -> float:
    # Polled from outside on virtual time: the actor has no state-change events to await yet.
    while await state_of(ref) != wanted:  # noqa: ASYNC110
        await trio.sleep(0.01)
    return trio.current_time()


async def respawned(world: World, ref: ActorRef, count: int) -> None:
    """Wait until the `count`-th process is up and the formation is running."""
    while len(world.launcher.spawned) < count or await state_of(ref) != "running":  # noqa: ASYNC110
        await trio.sleep(0.01)


async def test_start_waits_for_health_with_a_countdown(tmp_path: Path, autojump_clock: Any) -> None:
    async with running_world(tmp_path, healthy=lambda: trio.current_time() >= 1.0) as (world, ref):
        events, result = await start(ref)
        assert result["status"] == "running" and result["pid"] == 1000
        assert trio.current_time() == pytest.approx(1.0)
        assert events[0]["stage"] == "spawning"
        checks = [e for e in events if e["stage"] == "health_check"]
        assert [c["attempt"] for c in checks] == [1, 2, 3]
        assert [c["remaining_s"] for c in checks] == [5, 4.5, 4]
        assert {c["max_attempts"] for c in checks} == {11}
        env = world.launcher.specs[0].env
        assert env["PORT"] == "8001" and env["FORMATION_ID"] == "web" and env["A"] == "b"
        assert world.store.formation("web").pid == 1000  # type: ignore[union-attr]


async def test_health_timeout_fails_the_start_and_stops_the_process(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with running_world(tmp_path, healthy=lambda: False) as (world, ref):
        with pytest.raises(FsupError) as info:
            await start(ref)
        assert info.value.code == "HEALTH_CHECK_FAILED"
        assert "not healthy after 5s" in info.value.message
        assert trio.current_time() == pytest.approx(5.0)
        assert world.launcher.last.signals == [signal.SIGTERM]
        assert await state_of(ref) == "crashed"
        assert world.store.formation("web").pid is None  # type: ignore[union-attr]


async def test_exit_before_healthy_reports_code_and_stderr(tmp_path: Path, autojump_clock: Any) -> None:
    async with running_world(tmp_path, healthy=lambda: False) as (world, ref):
        async with trio.open_nursery() as nursery:
            async def crash_soon() -> None:
                await trio.sleep(0.7)
                world.launcher.last.exit(2)
            nursery.start_soon(crash_soon)
            with pytest.raises(FsupError) as info:
                await start(ref)
        assert info.value.details["exit_code"] == 2
        assert info.value.details["stderr_tail"] == "fake stderr\n"
        assert "exited with code 2" in info.value.message
        assert trio.current_time() == pytest.approx(0.7)


async def test_crashes_are_restarted_with_exponential_backoff(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with running_world(tmp_path) as (world, ref):
        await start(ref)
        spawn_times = []
        for count in (2, 3, 4):
            crashed_at = trio.current_time()
            world.launcher.last.exit(1)
            await wait_state(ref, "restarting")
            await respawned(world, ref, count)
            spawn_times.append(world.launcher.spawned[-1][0] - crashed_at)
        assert spawn_times == [pytest.approx(1), pytest.approx(2), pytest.approx(4)]
        snapshot = await ref.ask(Snapshot())
        assert snapshot["restart_count"] == 3 and snapshot["last_exit_code"] == 1
        # The fourth crash within the window exceeds max_restarts: crashed, no respawn.
        world.launcher.last.exit(1)
        await wait_state(ref, "crashed")
        await trio.sleep(60)
        assert len(world.launcher.spawned) == 4
        assert "giving up" in (await ref.ask(Snapshot()))["last_error"]


async def test_stable_uptime_resets_the_backoff(tmp_path: Path, autojump_clock: Any) -> None:
    async with running_world(tmp_path) as (world, ref):
        await start(ref)
        world.launcher.last.exit(1)
        await respawned(world, ref, 2)
        world.launcher.last.exit(1)
        await respawned(world, ref, 3)  # second restart: 2 s backoff
        await trio.sleep(31)  # healthy longer than reset_after
        crashed_at = trio.current_time()
        world.launcher.last.exit(1)
        await respawned(world, ref, 4)
        assert world.launcher.spawned[-1][0] - crashed_at == pytest.approx(1)


async def test_clean_exit_under_on_failure_stays_stopped(tmp_path: Path, autojump_clock: Any) -> None:
    async with running_world(tmp_path) as (world, ref):
        await start(ref)
        world.launcher.last.exit(0)
        await wait_state(ref, "stopped")
        await trio.sleep(60)
        assert len(world.launcher.spawned) == 1
        assert world.store.formation("web").desired == "stopped"  # type: ignore[union-attr]


async def test_stop_interrupts_a_health_check_at_once(tmp_path: Path, autojump_clock: Any) -> None:
    manifest = MANIFEST.replace("timeout: 5}", "timeout: 60}")
    async with running_world(tmp_path, healthy=lambda: False, manifest=manifest) as (world, ref):
        outcome: dict[str, Any] = {}

        async def starter() -> None:
            try:
                await start(ref)
            except FsupError as exc:
                outcome["error"] = exc
                outcome["at"] = trio.current_time()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(starter)
            await trio.sleep(2)
            stopped = await ref.ask(Stop())
        assert stopped["status"] == "stopped"
        assert outcome["error"].code == "OPERATION_CANCELLED"
        assert outcome["at"] == pytest.approx(2.0)
        assert trio.current_time() == pytest.approx(2.0)
        assert world.launcher.last.signals == [signal.SIGTERM]
        assert world.store.formation("web").desired == "stopped"  # type: ignore[union-attr]


async def test_stop_escalates_to_sigkill_after_the_timeout(tmp_path: Path, autojump_clock: Any) -> None:
    async with running_world(tmp_path, ignores_term=True) as (world, ref):
        await start(ref)
        began = trio.current_time()
        result = await ref.ask(Stop())
        assert result["status"] == "stopped"
        assert trio.current_time() - began == pytest.approx(3.0)
        assert world.launcher.last.signals == [signal.SIGTERM, signal.SIGKILL]
        assert (await ref.ask(Snapshot()))["last_exit_code"] == -signal.SIGKILL


async def test_restart_replaces_the_process(tmp_path: Path, autojump_clock: Any) -> None:
    async with running_world(tmp_path) as (world, ref):
        await start(ref)
        first = world.launcher.last
        with await ref.request(Restart()) as call:
            stages = [e["stage"] async for e in call.progress()]
            result = await call.result()
        assert stages[0] == "stopping" and "spawning" in stages
        assert first.signals == [signal.SIGTERM] and not first.alive()
        assert result["pid"] == world.launcher.last.pid != first.pid


async def test_unhealthy_for_the_timeout_while_running_is_restarted(
    tmp_path: Path, autojump_clock: Any
) -> None:
    sick = {"from": float("inf")}
    healthy = lambda: trio.current_time() < sick["from"]  # noqa: E731
    async with running_world(tmp_path, healthy=healthy) as (world, ref):
        await start(ref)
        sick["from"] = trio.current_time() + 1
        first = world.launcher.last
        while not first.signals:
            assert (await ref.ask(Snapshot()))["status"] == "running"
            await trio.sleep(0.1)
        # First failed probe at +1.0 s; still failing 5 s (health.timeout) later: stopped.
        assert trio.current_time() - sick["from"] == pytest.approx(5.0, abs=0.11)
        assert first.signals == [signal.SIGTERM]
        sick["from"] = float("inf")
        await respawned(world, ref, 2)
        assert world.launcher.last is not first


async def test_requests_that_do_not_fit_the_state_are_refused(tmp_path: Path, autojump_clock: Any) -> None:
    async with running_world(tmp_path) as (_, ref):
        with pytest.raises(FsupError) as not_running:
            await ref.ask(Stop())
        assert not_running.value.code == "FORMATION_NOT_RUNNING"
        await start(ref)
        with pytest.raises(FsupError) as already:
            await start(ref)
        assert already.value.code == "FORMATION_ALREADY_RUNNING"


class Fragile(FormationActor):
    """A formation actor with a bug on demand, to crash it under its supervisor."""

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        if message == "bug":
            raise RuntimeError("a bug in the actor")
        return await super().handle(message, reply)


async def test_a_restarted_actor_reattaches_instead_of_spawning(
    tmp_path: Path, autojump_clock: Any
) -> None:
    world = World(tmp_path, FakeLauncher(), FakeProbe(lambda: True), parse_manifest(MANIFEST.encode()))
    factory = lambda: Fragile(world.ctx, "web", world.spec, world.home.root, 8001, world.kept)  # noqa: E731
    async with trio.open_nursery() as nursery:
        supervisor = Supervisor(nursery)
        ref = await supervisor.start("formation:web", factory)
        await start(ref)
        pid = world.launcher.last.pid
        with pytest.raises(ActorCrashed):
            await ref.ask("bug")
        snapshot = await ref.ask(Snapshot())
        assert snapshot["status"] == "running" and snapshot["pid"] == pid
        assert len(world.launcher.spawned) == 1 and supervisor.restarts["formation:web"] == 1
        # Still supervising the same process: its crash is noticed and restarted.
        world.launcher.last.exit(1)
        await respawned(world, ref, 2)
        nursery.cancel_scope.cancel()
    world.store.close()


async def test_process_kind_health_is_one_second_up(tmp_path: Path, autojump_clock: Any) -> None:
    manifest = MANIFEST.replace("health: {http: /health, interval: 0.5, timeout: 5}\n", "")
    async with running_world(tmp_path, healthy=lambda: False, manifest=manifest) as (world, ref):
        _, result = await start(ref)
        assert result["status"] == "running"
        assert trio.current_time() == pytest.approx(HealthSpec().stay_up)
        assert world.probe.checks == []


class FakeFleet(Actor):
    """Hands out ports for staging processes and records what comes back."""

    name = "fleet"

    def __init__(self) -> None:
        super().__init__()
        self.next_port = 9001
        self.released: list[int] = []

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        if isinstance(message, AllocatePort):
            self.next_port += 1
            return self.next_port - 1
        if isinstance(message, ReleasePort):
            self.released.append(message.port)
            return None
        raise AssertionError(message)


def staged_bundle(tmp_path: Path, version: str) -> tuple[Path, FormationSpec, bytes]:
    staged = tmp_path / f"staged-{version}"
    staged.mkdir()
    manifest = MANIFEST.replace("version: 1.0.0", f"version: {version}").encode()
    (staged / "formation.yaml").write_bytes(manifest)
    return staged, parse_manifest(manifest), manifest


@asynccontextmanager
async def world_with_fleet(
    tmp_path: Path, healthy: Callable[[], bool]
) -> AsyncIterator[tuple[World, ActorRef, FakeFleet]]:
    world = World(tmp_path, FakeLauncher(), FakeProbe(healthy), parse_manifest(MANIFEST.encode()))
    world.ctx.routes.register("web")
    fleet = FakeFleet()
    async with trio.open_nursery() as nursery:
        world.ctx.fleet = await spawn(nursery, fleet)
        ref = await Supervisor(nursery).start("formation:web", world.actor)
        yield world, ref, fleet
        nursery.cancel_scope.cancel()
    world.store.close()


async def test_update_swaps_then_drains_before_stopping_the_old(
    tmp_path: Path, autojump_clock: Any
) -> None:
    # The update installs files in worker threads, and autojump_clock moves virtual time
    # while a thread runs, so this test checks the order of events, not their times.
    async with world_with_fleet(tmp_path, healthy=lambda: True) as (world, ref, fleet):
        await start(ref)
        old = world.launcher.last
        route = world.ctx.routes.get("web")
        assert route is not None and route.backend is not None
        held = route.backend
        held.acquire()  # a proxied request in flight on the old process
        staged, spec, manifest = staged_bundle(tmp_path, "1.1.0")
        seen: dict[str, Any] = {}

        async def finish_the_request_after_the_swap() -> None:
            while route.backend is held:  # noqa: ASYNC110 - observing the table from outside
                await trio.sleep(0.01)
            await trio.sleep(5)
            seen["old signalled while draining"] = list(old.signals)
            held.release()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(finish_the_request_after_the_swap)
            with await ref.request(Update(staged, spec, manifest)) as call:
                stages = [e["stage"] async for e in call.progress()]
                result = await call.result()
        assert stages[0] == "spawning_staging" and stages[-2:] == ["swapping", "stopping_old"]
        new = world.launcher.last
        assert result["version"] == "1.1.0" and result["pid"] == new.pid and result["port"] == 9001
        assert route.backend is not None and route.backend.pid == new.pid
        assert seen["old signalled while draining"] == []
        assert old.signals == [signal.SIGTERM] and not old.alive()
        assert fleet.released == [8001]
        row = world.store.formation("web")
        assert row is not None and (row.current_version, row.port, row.pid) == ("1.1.0", 9001, new.pid)


async def test_failed_update_gives_everything_back(tmp_path: Path, autojump_clock: Any) -> None:
    async with world_with_fleet(tmp_path, healthy=lambda: True) as (world, ref, fleet):
        await start(ref)
        old = world.launcher.last
        world.probe.unhealthy_ports.add(9001)  # the staging port
        staged, spec, manifest = staged_bundle(tmp_path, "2.0.0")
        with pytest.raises(FsupError) as info:
            await ref.ask(Update(staged, spec, manifest))
        assert info.value.code == "HEALTH_CHECK_FAILED"
        assert "not healthy after 5s" in info.value.message
        assert world.launcher.last.signals == [signal.SIGTERM] and old.alive()
        assert old.signals == []
        assert fleet.released == [9001]
        assert not (world.home.version_dir("web", "2.0.0")).exists()
        snapshot = await ref.ask(Snapshot())
        assert snapshot["version"] == "1.0.0" and snapshot["pid"] == old.pid
        assert snapshot["update_in_progress"] is False


# -- the port belongs to the formation's own process tree ----------------------------------


async def test_a_stranger_on_the_port_refuses_the_start(tmp_path: Path, autojump_clock: Any) -> None:
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

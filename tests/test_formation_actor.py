"""FormationActor's state machine on virtual time, with fake processes and probes.

Every timer (health intervals and timeouts, backoff, stop timeouts) is checked against exact
virtual times: `autojump_clock` jumps whenever all tasks are waiting.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from formation_fakes import (
    MANIFEST,
    FakeLauncher,
    FakeProbe,
    World,
    respawned,
    running_world,
    staged_bundle,
    start,
    state_of,
    wait_state,
    world_with_fleet,
)

from actors.base import ActorCrashed, Reply
from actors.formation import Restart, Snapshot, Stop, Update, watchers
from actors.formation.actor import FormationActor
from actors.formation.machine.messages import GateProgress
from actors.supervision import Supervisor
from supervisor.core.errors import FsupError
from supervisor.core.manifest import HealthSpec, parse_manifest


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


async def test_exit_before_healthy_reports_code_and_stderr(
    tmp_path: Path, autojump_clock: Any
) -> None:
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
        # Reset, and the run was stable: restarted at once (restart_policy.STABLE_RUN_S).
        assert world.launcher.spawned[-1][0] - crashed_at == pytest.approx(0)


async def test_first_crash_after_a_stable_run_is_restarted_at_once(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with running_world(tmp_path) as (world, ref):
        await start(ref)
        gaps = []
        for count in (2, 3, 4):
            await trio.sleep(5)  # up and healthy for 5 s: a stable run, yet within reset_after
            crashed_at = trio.current_time()
            world.launcher.last.exit(1)
            await respawned(world, ref, count)
            gaps.append(world.launcher.spawned[-1][0] - crashed_at)
        # Immediate, then the backoff from `initial` for the crashes that follow.
        assert gaps == [pytest.approx(0), pytest.approx(1), pytest.approx(2)]


async def test_clean_exit_under_on_failure_stays_stopped(
    tmp_path: Path, autojump_clock: Any
) -> None:
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


async def test_stop_escalates_to_sigkill_after_the_timeout(
    tmp_path: Path, autojump_clock: Any
) -> None:
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


async def test_requests_that_do_not_fit_the_state_are_refused(
    tmp_path: Path, autojump_clock: Any
) -> None:
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
    world = World(
        tmp_path, FakeLauncher(), FakeProbe(lambda: True), parse_manifest(MANIFEST.encode())
    )
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
        assert row is not None and (row.current_version, row.port, row.pid) == (
            "1.1.0",
            9001,
            new.pid,
        )


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


class _HealthyAt:
    """A probe that answers healthy from virtual time `at` on."""

    def __init__(self, at: float) -> None:
        self.at = at

    async def check(self, port: int) -> str | None:
        return None if trio.current_time() >= self.at else "connection refused"


class _Tail:
    async def stderr_tail(self) -> str:
        return ""


@pytest.mark.parametrize("hung_probe", [False, True])
async def test_a_gate_passed_just_before_its_deadline_is_posted_even_into_a_full_mailbox(
    autojump_clock: Any, hung_probe: bool
) -> None:
    """The GatePassed post waits for room in the mailbox outside the gate's deadline: a
    mailbox full at the deadline must not turn a healthy start into GateFailed. A probe that
    hangs past the deadline is still a failure."""
    health = parse_manifest(MANIFEST.encode()).health  # timeout 5 s
    posted: list[Any] = []

    async def post(event: Any) -> None:
        if isinstance(event, watchers.GatePassed):
            await trio.sleep(health.timeout)  # the mailbox is full until well past the deadline
        posted.append(event)

    class Hung:
        async def check(self, port: int) -> str | None:
            await trio.sleep_forever()
            raise AssertionError("unreachable")

    probe: Any = Hung() if hung_probe else _HealthyAt(trio.current_time() + health.timeout - 0.01)
    passed = await watchers.probe_until_healthy(post, 7, health, probe, 8001, _Tail())  # type: ignore[arg-type]
    kinds = [type(event).__name__ for event in posted if not isinstance(event, GateProgress)]
    assert (passed, kinds) == ((False, ["GateFailed"]) if hung_probe else (True, ["GatePassed"]))

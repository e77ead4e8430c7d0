"""When health checks run, on virtual time: the start gate early and often, liveness at its
period (every `interval` while failing), and no checks at all when there are none to make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from formation_fakes import MANIFEST, respawned, running_world, start, state_of

from actors.formation import Snapshot
from actors.formation.watchers import FIRST_GAP_S, GAP_GROWTH, gate_gap
from supervisor.core.ticks import next_on_grid

FIXTURE_HEALTH = "health: {http: /health, interval: 0.5, timeout: 5}"


def with_health(health: str) -> str:
    return MANIFEST.replace(FIXTURE_HEALTH, health)


async def test_the_gate_probes_within_milliseconds_of_the_spawn(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with running_world(tmp_path, healthy=lambda: trio.current_time() >= 0.04) as (
        world,
        ref,
    ):
        events, result = await start(ref)
        assert result["status"] == "running"
        checks = world.probe.checks
        assert checks[:2] == pytest.approx([0, FIRST_GAP_S])
        # Healthy from 40 ms: routed within a quarter of that, after a dozen probes at most.
        assert 0.04 <= trio.current_time() <= 0.04 * (1 + GAP_GROWTH) + 1e-9
        assert len(checks) <= 12
        route = world.ctx.routes.get("web")
        assert route is None or route.backend is not None
        # The countdown still counts intervals: one step so far.
        assert [e["attempt"] for e in events if e["stage"] == "health_check"] == [1]


async def test_the_gate_gaps_grow_to_the_interval(tmp_path: Path, autojump_clock: Any) -> None:
    async with running_world(tmp_path, healthy=lambda: False) as (world, ref):
        with pytest.raises(Exception, match="not healthy after 5s"):
            await start(ref)
        checks = world.probe.checks
        gaps = [round(b - a, 6) for a, b in zip(checks, checks[1:], strict=False)]
        assert gaps[0] == FIRST_GAP_S
        assert max(gaps) == pytest.approx(0.5)  # never further apart than `interval`
        # Quick ones early; from 2 s on (a quarter of the time waited is the interval), one per
        # interval, on the countdown's steps.
        assert [round(t, 3) for t in checks if t >= 2.0] == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
        assert len([t for t in checks if t < 2.0]) <= 30  # refused connects, one call each


@pytest.mark.parametrize(
    ("elapsed", "gates", "expected"),
    [
        (0.0, 1, FIRST_GAP_S),  # at once after the spawn
        (0.1, 1, 0.025),  # a quarter of the time since the spawn
        (1.0, 1, 0.25),
        (4.0, 1, 0.5),  # at most the interval
        (0.0, 30, 0.1),  # 30 gates in flight: 300 probes a second between them
        (0.0, 1000, 0.5),
    ],
)
def test_gate_gaps(elapsed: float, gates: int, expected: float) -> None:
    assert gate_gap(elapsed, 0.5, gates) == pytest.approx(expected)


async def test_liveness_defaults_to_every_10_s_when_the_manifest_sets_no_interval(
    tmp_path: Path, autojump_clock: Any
) -> None:
    manifest = with_health("health: {http: /health, timeout: 5}")
    async with running_world(tmp_path, manifest=manifest) as (world, ref):
        await start(ref)
        began = trio.current_time()
        world.probe.checks.clear()
        await trio.sleep(35)
        assert [t - began for t in world.probe.checks] == pytest.approx([10, 20, 30])


async def test_an_interval_the_manifest_sets_is_the_liveness_period_too(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with running_world(tmp_path) as (world, ref):
        await start(ref)
        began = trio.current_time()
        world.probe.checks.clear()
        await trio.sleep(2.1)
        assert [t - began for t in world.probe.checks] == pytest.approx([0.5, 1, 1.5, 2])


async def test_a_failing_liveness_check_is_followed_every_interval(
    tmp_path: Path, autojump_clock: Any
) -> None:
    sick = {"from": float("inf"), "until": float("inf")}

    def healthy() -> bool:
        return not sick["from"] <= trio.current_time() < sick["until"]

    manifest = with_health("health: {http: /health, interval: 0.5, liveness: 10, timeout: 5}")
    async with running_world(tmp_path, healthy=healthy, manifest=manifest) as (world, ref):
        await start(ref)
        began = trio.current_time()
        sick["from"], sick["until"] = began + 5, began + 11.2
        world.probe.checks.clear()
        await trio.sleep(25)
        times = [round(t - began, 3) for t in world.probe.checks]
        # 10: fails; every 0.5 s until it passes at 11.5; then on the 10 s grid again.
        assert times == [10, 10.5, 11, 11.5, 20]
        assert (await ref.ask(Snapshot()))["healthy"] is True


async def test_liveness_0_turns_checks_off_and_crashes_are_still_seen(
    tmp_path: Path, autojump_clock: Any
) -> None:
    manifest = with_health("health: {http: /health, interval: 0.5, liveness: 0, timeout: 5}")
    async with running_world(tmp_path, manifest=manifest) as (world, ref):
        await start(ref)
        gate_checks = len(world.probe.checks)
        await trio.sleep(3600)
        assert len(world.probe.checks) == gate_checks
        assert await state_of(ref) == "running"
        route = world.ctx.routes.get("web")
        assert route is None or route.interval == float("inf")  # never stale for want of checks
        world.launcher.last.exit(1)
        await respawned(world, ref, 2)


async def test_a_process_without_a_probe_wakes_nothing_while_running(
    tmp_path: Path, autojump_clock: Any
) -> None:
    manifest = MANIFEST.replace(FIXTURE_HEALTH + "\n", "")
    async with running_world(tmp_path, manifest=manifest) as (world, ref):
        await start(ref)
        await trio.sleep(3600)
        assert world.probe.checks == []
        assert await state_of(ref) == "running"


@pytest.mark.parametrize(
    ("now", "period", "expected"),
    [(0, 10, 10), (3.3, 10, 10), (5.1, 10, 20), (14.9, 10, 20), (0, 0.5, 0.5), (0.5, 0.5, 1.0)],
)
def test_liveness_checks_fall_on_a_grid_shared_by_every_formation(
    now: float, period: float, expected: float
) -> None:
    assert next_on_grid(now, period) == pytest.approx(expected)
    assert period / 2 <= next_on_grid(now, period) - now <= period * 1.5


async def test_formations_started_apart_are_checked_in_the_same_wake_up(
    tmp_path: Path, autojump_clock: Any
) -> None:
    manifest = with_health("health: {http: /health, timeout: 5}")
    async with running_world(tmp_path, manifest=manifest) as (world, ref):
        await trio.sleep(3.3)  # started 3.3 s after a grid line
        await start(ref)
        world.probe.checks.clear()
        await trio.sleep(30)
        assert world.probe.checks == pytest.approx([10, 20, 30])

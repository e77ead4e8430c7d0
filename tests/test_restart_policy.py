"""Backoff, jitter, reset after stable uptime, and the give-up window: exact numbers."""

from __future__ import annotations

import random

import pytest

from actors.formation.machine.restart_policy import RestartTracker, wants_restart
from supervisor.core.manifest import BackoffSpec, RestartSpec


def tracker(jitter: float = 0.0, **kw: object) -> RestartTracker:
    spec = RestartSpec(backoff=BackoffSpec(initial=0.5, factor=2, max=4, jitter=jitter), **kw)  # type: ignore[arg-type]
    return RestartTracker(spec, random.Random(7))


def test_backoff_doubles_up_to_the_cap() -> None:
    t = tracker(max_restarts=100)
    delays = [t.on_exit(1, now=float(i), healthy_since=None).delay for i in range(7)]
    assert delays == [0.5, 1, 2, 4, 4, 4, 4]


def test_jitter_stays_within_its_band() -> None:
    t = tracker(jitter=0.1, max_restarts=1000)
    for i in range(200):
        t.reset()  # probe the first step repeatedly
        delay = t.on_exit(1, now=float(i), healthy_since=None).delay
        assert 0.45 <= delay <= 0.55


def test_stable_uptime_resets_the_backoff() -> None:
    t = tracker(reset_after=60, max_restarts=100)
    for i in range(3):
        t.on_exit(1, now=float(i), healthy_since=None)
    assert t.attempt == 3
    # Healthy since t=10, exits at t=69: not long enough.
    assert t.on_exit(1, now=69, healthy_since=10).delay == 4
    # Healthy since t=100, exits at t=160: reset, and a stable run: restarted at once...
    assert t.on_exit(1, now=160, healthy_since=100).delay == 0
    # ...and the next crash of the streak is back to the first delay.
    assert t.on_exit(1, now=161, healthy_since=None).delay == 0.5


def test_gives_up_after_max_restarts_within_the_window() -> None:
    t = tracker(max_restarts=3, window=10)
    decisions = [t.on_exit(1, now=float(i), healthy_since=None) for i in range(4)]
    assert [d.restart for d in decisions] == [True, True, True, False]
    assert decisions[-1].give_up and "giving up" in decisions[-1].reason


def test_restarts_outside_the_window_do_not_count() -> None:
    t = tracker(max_restarts=2, window=10)
    for now in (0.0, 5.0, 20.0, 25.0, 40.0, 45.0):
        assert t.on_exit(1, now=now, healthy_since=None).restart


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [
        ("always", 0, True),
        ("always", 1, True),
        ("on-failure", 0, False),
        ("on-failure", 1, True),
        ("on-failure", -9, True),
        ("on-failure", None, True),
        ("never", 1, False),
    ],
)
def test_policies(policy: str, code: int | None, expected: bool) -> None:
    assert wants_restart(policy, code) is expected


def test_a_clean_exit_under_on_failure_is_not_restarted() -> None:
    decision = tracker(policy="on-failure").on_exit(0, now=0, healthy_since=None)
    assert not decision.restart and not decision.give_up


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        # (healthy_since, now) of each exit: the delays that follow.
        ([(0.0, 10.0), (11.0, 12.0), (13.0, 20.0)], [0, 0.5, 1]),  # stable, then a streak
        ([(None, 1.0), (None, 2.0)], [0.5, 1]),  # never healthy: backoff from the first
        ([(5.0, 5.5), (6.0, 20.0)], [0.5, 1]),  # healthy 0.5 s: not a stable run
        ([(0.0, 1.0), (2.0, 3.0)], [0, 0.5]),  # healthy exactly STABLE_RUN_S: stable
        ([(0.0, 10.0), (20.0, 90.0), (91.0, 92.0)], [0, 0, 0.5]),  # reset_after: free again
    ],
)
def test_the_first_restart_after_a_stable_run_is_immediate(
    runs: list[tuple[float | None, float]], expected: list[float]
) -> None:
    t = tracker(reset_after=60, max_restarts=100)
    delays = [t.on_exit(1, now=now, healthy_since=since).delay for since, now in runs]
    assert delays == expected


def test_an_operator_reset_brings_back_the_immediate_restart() -> None:
    t = tracker(max_restarts=100)
    assert [t.on_exit(1, now=10, healthy_since=0).delay for _ in range(3)] == [0, 0.5, 1]
    t.reset()
    assert t.on_exit(1, now=20, healthy_since=0).delay == 0

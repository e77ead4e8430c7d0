"""The machine's tables: whole, read by the machine, and enforced.

Like h11's `_state.py`, what the formation machine decides lives in tables
(`lifecycle.ALLOWED`, `requests.HOLDS` / `START` / `STOP` / `RESTART`, `stopping.REPLANS`,
`update.PHASES`). These tests check each is total and that the machine refuses what a table
forbids; tests/test_formation_machine.py walks the request tables through real machines.
"""

from __future__ import annotations

import pytest
from machine_kit import booted, in_state, spec, update_target

from actors.formation.machine import effects as fx
from actors.formation.machine import requests
from actors.formation.machine.lifecycle import COMING_BACK, State
from actors.formation.machine.messages import GatePassed, Requested, Restart, Start, Stop
from actors.formation.machine.requests import Hold, Verdict
from actors.formation.machine.stopping import REPLANS, After, IllegalReplan, StopPlan
from actors.formation.machine.update import PHASES, IllegalPhase, Job, Phase


@pytest.mark.parametrize("table", [requests.START, requests.STOP, requests.RESTART])
def test_every_state_has_a_row(table: dict[State, requests.Act]) -> None:
    assert set(table) == set(State)


def test_every_hold_has_a_row_and_none_decides_nothing() -> None:
    assert set(requests.HOLDS) == set(Hold)
    assert requests.HOLDS[Hold.NONE] == {}
    assert requests.verdict(Hold.NONE, Start()) is Verdict.PROCEED


def test_a_hold_decides_before_the_state() -> None:
    paper = in_state(State.STOPPED)
    paper.request(update_target())  # a stopped formation: its version switches in place
    assert paper.machine.hold is Hold.SWITCHING
    rid = paper.request(Start())  # the START table says spawn; the hold refuses first
    answer = paper.answers[rid]
    assert answer.error is not None and answer.error.code == "UPDATE_IN_PROGRESS"
    assert paper.machine.state is State.STOPPED


def test_an_exit_plan_is_final() -> None:
    assert set(REPLANS) == set(After)
    assert REPLANS[After.EXIT] == frozenset({After.EXIT})
    exit_plan = StopPlan(After.EXIT, "delete")
    for then in After:
        if then is After.EXIT:
            assert exit_plan.replaced_by(then, "delete").then is After.EXIT
        else:
            with pytest.raises(IllegalReplan):
                exit_plan.replaced_by(then, "restart")


def test_every_other_plan_may_be_replaced_by_a_request() -> None:
    for then in After:
        if then is not After.EXIT:
            assert REPLANS[then] >= {After.STOPPED, After.START, After.EXIT}


def test_phases_follow_the_table() -> None:
    assert set(PHASES) == set(Phase)
    assert PHASES[Phase.DONE] == PHASES[Phase.CLEANED] == frozenset()
    job = Job(1, "update", spec("2.0.0"), update_target().version_dir, None, "1.0.0", False)
    job.enter(Phase.GATING)
    with pytest.raises(IllegalPhase):
        job.enter(Phase.PREPARING)
    job.enter(Phase.RETIRING)
    with pytest.raises(IllegalPhase):
        job.enter(Phase.ABORTING)  # past the swap, nothing can be undone
    job.enter(Phase.DONE)


def test_route_expectation_is_said_when_it_changes_first_or_last() -> None:
    paper = booted("stopped")
    paper.request(Start())
    assert paper.last[0] == fx.ExpectRoute(True), paper.last  # before anything else
    m = paper.machine
    passed = paper.feed(GatePassed(m.gen))
    routed = [i for i, e in enumerate(passed) if isinstance(e, fx.PublishRoute)]
    assert routed and passed[-1] == fx.ExpectRoute(False), passed  # after the new route
    assert routed[0] < len(passed) - 1
    assert m.handle(GatePassed(m.gen - 1000), 2.0) == []  # stale: nothing changes, nothing said


def test_a_stop_releases_the_hold_once_stopped() -> None:
    paper = in_state(State.RUNNING)
    m = paper.machine
    stopping = m.handle(Requested(10_000, Stop()), 0.0)
    assert not any(isinstance(e, fx.ExpectRoute) for e in stopping)  # desired: stopped
    assert m.state is State.STOPPING and m.state in COMING_BACK and m.desired == "stopped"


def test_a_stop_overtaken_by_a_restart_is_answered_at_once() -> None:
    """Found by the issue 18 review (and as old as the machine): the stop's client hung until
    the actor ended, because a restart replaced its plan and nothing answered it."""
    paper = in_state(State.RUNNING)
    m = paper.machine
    stop = paper.request(Stop())
    assert m.state is State.STOPPING and stop not in paper.answers
    restart = paper.request(Restart())
    answer = paper.answers[stop]
    assert answer.error is not None and answer.error.code == "OPERATION_CANCELLED"
    assert "overtaken by a restart" in answer.error.message
    assert restart not in paper.answers and m.stop_waiters == []
    paper.finish_stop(m.gen)
    paper.feed(GatePassed(m.gen))
    assert m.state is State.RUNNING and paper.answers[restart].error is None

"""FormationMachine, table by table: every (state, event) pair, the illegal ones included.

Each row brings a machine to a state by the events that lead there in real life, feeds one
event, and checks the state it ends in and how the event was answered: a request gets exactly
one answer (a value, or a clear error code) or is kept waiting (`deferred`, answered when its
outcome is known); an event that does not fit is ignored (no effect at all). No trio, no
processes: the machine is pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from machine_kit import Paper, in_state, rollback_target, update_target

from actors.formation.machine import effects as fx
from actors.formation.machine.lifecycle import State
from actors.formation.machine.messages import (
    CancelUpdate,
    EnsureRunning,
    Exited,
    GateFailed,
    GatePassed,
    GateProgress,
    JobCleaned,
    JobFailed,
    JobStaged,
    OldRetired,
    PortTaken,
    ProbeNow,
    ProbeResult,
    Restart,
    Shutdown,
    Spawned,
    SpawnFailed,
    Start,
    Stop,
    StopFinished,
    TimerFired,
)
from actors.formation.machine.update import Phase
from supervisor.core.errors import FsupError

TAKEN = FsupError("PORT_IN_USE", "port 8001 is held by a stranger")

# Requests: (name, request). Answer column: an error code, "value", or "deferred".
REQUESTS: dict[str, Any] = {
    "start": Start(),
    "stop": Stop(),
    "restart": Restart(),
    "shutdown": Shutdown(keep_desired=True),
    "delete": Shutdown(keep_desired=False),
    "ensure": EnsureRunning(),
    "probe_now": ProbeNow(),
    "cancel_update": CancelUpdate(),
    "update": update_target(),
    "rollback": rollback_target(),
    "unknown": object(),
}

S, G, RUN, P, RS, C = (
    State.STOPPED,
    State.STARTING,
    State.RUNNING,
    State.STOPPING,
    State.RESTARTING,
    State.CRASHED,
)
BUSY, ALREADY, NOT_RUNNING = (
    "FORMATION_BUSY",
    "FORMATION_ALREADY_RUNNING",
    "FORMATION_NOT_RUNNING",
)
# Requests form a closed union: anything else is the driver's bug, refused by the actor
# before it reaches the machine (INVALID_REQUEST); fed to the machine, it raises.
INVALID = "raises"

# state -> request -> (state after, answer)
REQUEST_TABLE: dict[State, dict[str, tuple[State, str]]] = {
    S: {
        "start": (G, "deferred"),
        "stop": (S, NOT_RUNNING),
        "restart": (G, "deferred"),
        "shutdown": (S, "value"),
        "delete": (S, "value"),
        "ensure": (S, "value"),
        "probe_now": (S, "value"),
        "cancel_update": (S, "value"),
        "update": (S, "deferred"),
        "rollback": (S, "deferred"),
        "unknown": (S, INVALID),
    },
    G: {
        "start": (G, "deferred"),
        "stop": (P, "deferred"),
        "restart": (P, "deferred"),
        "shutdown": (P, "deferred"),
        "delete": (P, "deferred"),
        "ensure": (G, "value"),
        "probe_now": (G, "value"),
        "cancel_update": (G, "value"),
        "update": (G, BUSY),
        "rollback": (G, BUSY),
        "unknown": (G, INVALID),
    },
    RUN: {
        "start": (RUN, ALREADY),
        "stop": (P, "deferred"),
        "restart": (P, "deferred"),
        "shutdown": (P, "deferred"),
        "delete": (P, "deferred"),
        "ensure": (RUN, "value"),
        "probe_now": (RUN, "value"),
        "cancel_update": (RUN, "value"),
        "update": (RUN, "deferred"),
        "rollback": (RUN, "deferred"),
        "unknown": (RUN, INVALID),
    },
    P: {
        "start": (P, ALREADY),
        "stop": (P, "deferred"),
        "restart": (P, "deferred"),
        "shutdown": (P, "deferred"),
        "delete": (P, "deferred"),
        "ensure": (P, "value"),
        "probe_now": (P, "value"),
        "cancel_update": (P, "value"),
        "update": (P, BUSY),
        "rollback": (P, BUSY),
        "unknown": (P, INVALID),
    },
    RS: {
        "start": (G, "deferred"),
        "stop": (S, "value"),
        "restart": (G, "deferred"),
        "shutdown": (RS, "value"),
        "delete": (RS, "value"),
        "ensure": (RS, "value"),
        "probe_now": (RS, "value"),
        "cancel_update": (RS, "value"),
        "update": (RS, BUSY),
        "rollback": (RS, BUSY),
        "unknown": (RS, INVALID),
    },
    C: {
        "start": (G, "deferred"),
        "stop": (S, "value"),
        "restart": (G, "deferred"),
        "shutdown": (C, "value"),
        "delete": (C, "value"),
        "ensure": (G, "value"),
        "probe_now": (C, "value"),
        "cancel_update": (C, "value"),
        "update": (C, "deferred"),
        "rollback": (C, "deferred"),
        "unknown": (C, INVALID),
    },
}


UIP = "UPDATE_IN_PROGRESS"
# The machine's sub-states that a state alone does not name, each a row of the table too:
# stopping for an exit (a delete or shutdown: nothing may replace the exit, the actor ends),
# stopped but ending (a shutdown waits for an update's cleanup), and an update of a formation
# that has no process (its version switches: nothing may start the old one meanwhile).
SUB_STATES: dict[str, tuple[State, Callable[[], Paper]]] = {
    "exiting_for_delete": (P, lambda: _exiting(Shutdown(keep_desired=False))),
    "exiting_for_shutdown": (P, lambda: _exiting(Shutdown(keep_desired=True))),
    "ending_after_an_update": (S, lambda: _ending_after_an_update()),
    "updating_stopped": (S, lambda: _updating_offline(S)),
    "retiring_stopped": (S, lambda: _updating_offline(S, switched=True)),
    "updating_crashed": (C, lambda: _updating_offline(C)),
}
EXITING = {
    "start": (P, BUSY),
    "stop": (P, "deferred"),  # it waits for the exit, which stops the formation too
    "restart": (P, BUSY),
    "shutdown": (P, "deferred"),
    "delete": (P, "deferred"),
    "ensure": (P, "value"),
    "probe_now": (P, "value"),
    "cancel_update": (P, "value"),
    "update": (P, BUSY),
    "rollback": (P, BUSY),
    "unknown": (P, INVALID),
}


def _offline(state: State, cancel: str, stop: tuple[State, str]) -> dict[str, tuple[State, str]]:
    return {
        "start": (state, UIP),
        "stop": stop,
        "restart": (state, UIP),
        "shutdown": (state, "deferred"),
        "delete": (state, "deferred"),
        "ensure": (state, "value"),
        "probe_now": (state, "value"),
        "cancel_update": (state, cancel),
        "update": (state, UIP),
        "rollback": (state, UIP),
        "unknown": (state, INVALID),
    }


SUB_STATE_TABLE: dict[str, dict[str, tuple[State, str]]] = {
    "exiting_for_delete": EXITING,
    "exiting_for_shutdown": EXITING,
    "ending_after_an_update": {
        **{name: (S, answer) for name, (_state, answer) in EXITING.items()},
        "update": (S, UIP),
        "rollback": (S, UIP),
    },
    "updating_stopped": _offline(S, "deferred", (S, NOT_RUNNING)),
    "retiring_stopped": _offline(S, "value", (S, NOT_RUNNING)),
    "updating_crashed": _offline(C, "deferred", (S, "value")),
}


def _exiting(shutdown: Shutdown) -> Paper:
    paper = in_state(RUN)
    paper.request(shutdown)
    return paper


def _ending_after_an_update() -> Paper:
    paper, _rid, job_id = _updating()
    paper.stage(job_id)
    paper.request(Shutdown(keep_desired=True))  # desired stays running: nothing may start
    paper.finish_stop(paper.machine.gen)
    assert paper.machine.ending and not paper.ended
    return paper


def _updating_offline(state: State, switched: bool = False) -> Paper:
    paper = in_state(state)
    paper.request(update_target())
    job = paper.machine.job
    assert job is not None
    if switched:
        paper.preparing.pop(job.id)
        paper.feed(JobStaged(job.id, None, None))
        assert job.phase is Phase.RETIRING and paper.machine.spec.version == "2.0.0"
    return paper


ROWS = [(s.value, n) for s in REQUEST_TABLE for n in REQUESTS] + [
    (sub, n) for sub in SUB_STATE_TABLE for n in REQUESTS
]


@pytest.mark.parametrize(("situation", "name"), ROWS, ids=[f"{s}-{n}" for s, n in ROWS])
def test_request_in_state(situation: str, name: str) -> None:
    if situation in SUB_STATES:
        state, build = SUB_STATES[situation]
        paper = build()
        expected_state, expected_answer = SUB_STATE_TABLE[situation][name]
    else:
        state = State(situation)
        paper = in_state(state)
        expected_state, expected_answer = REQUEST_TABLE[state][name]
    assert paper.machine.state is state
    if expected_answer == INVALID:
        with pytest.raises(AssertionError, match="unreachable"):
            paper.request(REQUESTS[name])
        assert paper.machine.state is expected_state
        return
    rid = paper.request(REQUESTS[name])
    assert paper.machine.state is expected_state
    if name not in ("shutdown", "delete"):
        assert not paper.ended, "only an exit ends the actor"
    answer = paper.answers.get(rid)
    if expected_answer == "deferred":
        assert answer is None, answer
        assert _waiting(paper, rid), "a deferred request must be kept to answer later"
    elif expected_answer == "value":
        assert answer is not None and answer.error is None
    else:
        assert answer is not None and answer.error is not None
        assert answer.error.code == expected_answer, answer.error


def _waiting(paper: Paper, rid: int) -> bool:
    m = paper.machine
    job = m.job
    return (
        rid in m.start_waiters
        or rid in m.stop_waiters
        or (job is not None and (rid in job.waiters or rid in job.cancel_waiters))
    )


# Internal events: built from the machine as it is (its current generation), so that each
# is the "real" event for that state; `stale` is the same kind from an earlier generation.
EVENTS: dict[str, Callable[[Paper], Any]] = {
    "spawned": lambda p: Spawned(p.machine.gen, 999, 0.0),
    "spawn_failed": lambda p: SpawnFailed(p.machine.gen, "no such file", None),
    "exited": lambda p: Exited(p.machine.gen, 1),
    "gate_progress": lambda p: GateProgress(p.machine.gen, 1, 11, 5.0, None),
    "gate_passed": lambda p: GatePassed(p.machine.gen),
    "gate_failed": lambda p: GateFailed(p.machine.gen, "not healthy after 5s"),
    "probe_ok": lambda p: ProbeResult(p.machine.gen, None),
    "probe_bad": lambda p: ProbeResult(p.machine.gen, "503"),
    "port_taken": lambda p: PortTaken(p.machine.gen, TAKEN),
    "timer": lambda p: TimerFired(p.machine.gen),
    "stop_finished": lambda p: StopFinished(p.machine.gen, 0),
    "job_staged": lambda p: JobStaged(77, 555, 9001, 0.0),
    "job_failed": lambda p: JobFailed(77, TAKEN),
    "job_cleaned": lambda p: JobCleaned(77),
    "old_retired": lambda p: OldRetired(77),
    "stale_exit": lambda p: Exited(p.machine.gen - 1000, 1),
    "stale_gate": lambda p: GatePassed(p.machine.gen - 1000),
}
_ = "ignored"
# state -> event -> state after ("ignored": no effect at all)
EVENT_TABLE: dict[State, dict[str, State | str]] = {
    S: dict.fromkeys(EVENTS, _),
    G: {
        **dict.fromkeys(EVENTS, _),
        "exited": RS,
        "gate_progress": G,
        "gate_passed": RUN,
        "gate_failed": P,
        "port_taken": P,
    },
    RUN: {
        **dict.fromkeys(EVENTS, _),
        "exited": RS,
        "gate_progress": RUN,
        "probe_ok": RUN,
        "probe_bad": RUN,
        "port_taken": P,
    },
    P: {**dict.fromkeys(EVENTS, _), "stop_finished": S, "exited": P},
    RS: {**dict.fromkeys(EVENTS, _), "timer": G},
    C: dict.fromkeys(EVENTS, _),
}


@pytest.mark.parametrize(
    ("state", "name"),
    [(s, n) for s in EVENT_TABLE for n in EVENTS],
    ids=[f"{s.value}-{n}" for s in EVENT_TABLE for n in EVENTS],
)
def test_event_in_state(state: State, name: str) -> None:
    paper = in_state(state)
    effects = paper.feed(EVENTS[name](paper))
    expected = EVENT_TABLE[state][name]
    if expected == "ignored":
        assert effects == [] and paper.machine.state is state
    else:
        assert paper.machine.state is expected


# -- the update's phases ---------------------------------------------------------------------


def _updating(live: bool = True) -> tuple[Paper, int, int]:
    paper = in_state(State.RUNNING if live else State.STOPPED)
    rid = paper.request(update_target())
    job = paper.machine.job
    assert job is not None and job.phase is Phase.PREPARING
    return paper, rid, job.id


def test_update_phases_of_a_running_formation() -> None:
    paper, rid, job_id = _updating()
    old_pid = paper.machine.pid
    paper.stage(job_id)
    job = paper.machine.job
    assert job is not None and job.phase is Phase.GATING
    assert paper.feed(GatePassed(paper.machine.gen - 1000)) == []  # stale
    paper.feed(GatePassed(job.gen))
    assert job.phase is Phase.RETIRING and paper.machine.pid == 555 and paper.route == 555
    assert paper.answers.get(rid) is None
    assert paper.request(CancelUpdate()) in paper.answers  # too late: answered, not cancelled
    retire = paper.retiring[job_id]
    assert (retire.pid, retire.port, retire.prune) == (old_pid, 8001, True)
    paper.feed(OldRetired(job_id))
    assert job.phase is Phase.DONE and paper.machine.job is None
    answer = paper.answers[rid]
    assert answer.value["version"] == "2.0.0" and answer.value["previous_version"] == "1.0.0"


def test_update_of_a_stopped_formation_switches_the_version() -> None:
    paper, rid, job_id = _updating(live=False)
    paper.feed(JobStaged(job_id, None, None))
    assert paper.machine.spec.version == "2.0.0" and paper.route is None
    assert paper.retiring[job_id].pid is None
    paper.feed(OldRetired(job_id))
    assert paper.answers[rid].value["status"] == "stopped"


@pytest.mark.parametrize("phase", [Phase.PREPARING, Phase.GATING])
@pytest.mark.parametrize(
    "undo", ["cancel", "failed", "exited", "gate_failed", "port_taken", "stop", "active_exit"]
)
def test_abort_in_phase_cleans_up_then_answers(phase: Phase, undo: str) -> None:
    paper, rid, job_id = _updating()
    m = paper.machine
    if phase is Phase.GATING:
        paper.stage(job_id)
    job = m.job
    assert job is not None and job.phase is phase
    staging = {
        "exited": Exited(job.gen, 3),
        "gate_failed": GateFailed(job.gen, "nope"),
        "port_taken": PortTaken(job.gen, TAKEN),
    }
    if undo == "cancel":
        cancel = paper.request(CancelUpdate())
    elif undo == "failed":
        paper.feed(JobFailed(job_id, TAKEN))
    elif undo == "stop":
        paper.request(Stop())
    elif undo == "active_exit":
        paper.feed(Exited(m.gen, 1))
    elif phase is Phase.GATING:
        paper.feed(staging[undo])
    else:
        assert paper.feed(staging[undo]) == []  # no staging process yet: stale
        return
    if undo == "failed" and phase is Phase.GATING:
        assert job.phase is Phase.GATING  # a preparation's failure after it staged is stale
        return
    assert job.phase is Phase.ABORTING and job_id in paper.cleaning
    assert rid not in paper.answers  # answered once the cleanup is done
    paper.feed(JobCleaned(job_id))
    assert job.phase is Phase.CLEANED and m.job is None
    error = paper.answers[rid].error
    assert error is not None
    if undo == "cancel":
        assert error.code == "OPERATION_CANCELLED" and paper.answers[cancel].value["cancelled"]


@pytest.mark.parametrize("event", ["job_staged", "job_failed", "job_cleaned", "old_retired"])
@pytest.mark.parametrize("phase", [Phase.PREPARING, Phase.GATING, Phase.RETIRING, Phase.ABORTING])
def test_job_events_outside_their_phase_are_ignored(phase: Phase, event: str) -> None:
    paper, _rid, job_id = _updating()
    job = paper.machine.job
    assert job is not None
    if phase is not Phase.PREPARING:
        paper.stage(job_id)
    if phase is Phase.RETIRING:
        paper.feed(GatePassed(job.gen))
    if phase is Phase.ABORTING:
        paper.request(CancelUpdate())
    assert job.phase is phase
    accepted = {
        (Phase.PREPARING, "job_staged"),
        (Phase.PREPARING, "job_failed"),
        (Phase.RETIRING, "old_retired"),
        (Phase.ABORTING, "job_cleaned"),
    }
    events = {
        "job_staged": JobStaged(job_id, 556, 9002, 1.0),
        "job_failed": JobFailed(job_id, TAKEN),
        "job_cleaned": JobCleaned(job_id),
        "old_retired": OldRetired(job_id),
    }
    effects = paper.stage(job_id, 556, 9002) if event == "job_staged" else paper.feed(events[event])
    if (phase, event) not in accepted:
        assert effects == [] and job.phase is phase


def test_shutdown_during_an_update_ends_after_the_cleanup() -> None:
    paper, rid, job_id = _updating()
    m = paper.machine
    paper.stage(job_id)
    shutdown = paper.request(Shutdown())
    paper.finish_stop(m.gen)
    assert m.state is State.STOPPED and not paper.ended and shutdown not in paper.answers
    paper.feed(JobCleaned(job_id))
    assert paper.ended and paper.answers[shutdown].value["status"] == "stopped"
    assert paper.answers[rid].error is not None
    assert [e for e in paper.last if isinstance(e, fx.EndActor)]

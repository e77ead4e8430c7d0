"""The requests a formation's machine answers itself (the lifecycle ones), part of
`FormationMachine`: each is answered now (a value, or a clear error when it does not fit the
state) or kept in a waiting list until its outcome is known. Updates and rollbacks are in
`update.py`; reads (snapshot, nodes) never reach the machine (`views.py`).

Two sub-states decide before the state does (`_refusal`), each a row of the machine's table
(tests/test_formation_machine.py):
- exiting (a delete or shutdown accepted): a start or restart is refused with
  `FORMATION_BUSY`, a stop waits for the exit, a reconcile starts nothing; the exit's plan is
  never replaced, so the actor always ends;
- an update or rollback of a formation without a process (its version switches in place):
  a start or restart is refused with `UPDATE_IN_PROGRESS`, a reconcile starts nothing; so the
  version switched to is never the version of a process that runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor.core.errors import FsupError

from . import effects as fx
from . import update
from .lifecycle import State
from .messages import CancelUpdate, EnsureRunning, ProbeNow, Restart, Shutdown, Start, Stop
from .stopping import After, StopPlan

if TYPE_CHECKING:
    from .formation import FormationMachine


def on_request(m: FormationMachine, rid: int, request: Any) -> None:
    """A numbered request: answered now, or kept in a waiting list to answer later."""
    refusal = _refusal(m, request)
    if refusal is not None:
        m.emit(fx.Answer(rid, error=refusal))
        return
    match request:
        case Start():
            _on_start(m, rid)
        case Stop():
            _on_stop(m, rid)
        case Restart():
            _on_restart(m, rid)
        case Shutdown(keep_desired=keep):
            _on_shutdown(m, rid, keep)
        case EnsureRunning():
            m.emit(fx.Answer(rid, _ensure_running(m)))
        case ProbeNow():
            _probe_now(m, rid)
        case CancelUpdate():
            update.cancel(m, rid)
        case _:
            m.emit(
                fx.Answer(
                    rid,
                    error=FsupError("INVALID_REQUEST", f"unknown message {type(request).__name__}"),
                )
            )


def _refusal(m: FormationMachine, request: Any) -> FsupError | None:
    """A start or restart that a sub-state forbids, whatever the state would allow."""
    if not isinstance(request, Start | Restart):
        return None
    if m.exiting is not None:
        why = "being deleted" if m.exiting == "delete" else "stopping because fsup stops"
        return FsupError(
            "FORMATION_BUSY",
            f"formation '{m.id}' is {why}; it cannot be started again",
            {"formation_id": m.id, "exiting": m.exiting},
        )
    if m.job is not None and m.job.offline:
        return update.in_progress(m, m.job)
    return None


def _blocked(m: FormationMachine) -> bool:
    """No automatic start either: the formation exits, or its version is being switched."""
    return m.exiting is not None or (m.job is not None and m.job.offline)


def _on_start(m: FormationMachine, rid: int) -> None:
    if m.state in (State.RUNNING, State.STOPPING):
        m.emit(fx.Answer(rid, error=_already_running(m)))
        return
    m._set_desired("running")
    m.start_waiters.append(rid)
    if m.state is State.STARTING:
        m.requested_start = True
        return
    m.tracker.reset()
    m.restart_count = 0
    m._cancel_backoff()
    m._spawn(requested=True, reason="start")


def _already_running(m: FormationMachine) -> FsupError:
    if m.state is State.RUNNING:
        return FsupError(
            "FORMATION_ALREADY_RUNNING",
            f"formation '{m.id}' is already running; use restart to restart it",
        )
    return FsupError(
        "FORMATION_ALREADY_RUNNING",
        f"formation '{m.id}' is stopping; start it again once it has stopped",
    )


def _on_stop(m: FormationMachine, rid: int) -> None:
    if m.exiting is not None:
        m._set_desired("stopped")
        m.stop_waiters.append(rid)  # answered as the actor ends, stopped
        return
    if m.state is State.STOPPED:
        m.emit(
            fx.Answer(
                rid,
                error=FsupError(
                    "FORMATION_NOT_RUNNING", f"formation '{m.id}' is not running (stopped)"
                ),
            )
        )
        return
    m._set_desired("stopped")
    m._fail_start_waiters("stop")
    if m.state in (State.CRASHED, State.RESTARTING):
        m._cancel_backoff()
        m._to(State.STOPPED, "stop")
        m.emit(fx.Answer(rid, m.result("stopped")))
        return
    m.stop_waiters.append(rid)
    _stop_with(m, After.STOPPED, "stop")


def _on_restart(m: FormationMachine, rid: int) -> None:
    m._set_desired("running")
    m.start_waiters.append(rid)
    m.tracker.reset()
    m.restart_count = 0
    if m.state in (State.RUNNING, State.STARTING):
        m.emit(fx.Progress(rid, {"stage": "stopping", "message": f"Stopping pid {m.pid}"}))
        m._begin_stop(After.START, "restart")
    elif m.state is State.STOPPING:
        m.plan = StopPlan(After.START, "restart")
    else:
        m._cancel_backoff()
        m._spawn(requested=True, reason="restart")


def _on_shutdown(m: FormationMachine, rid: int, keep_desired: bool) -> None:
    why = "shutdown" if keep_desired else "delete"
    if m.exiting != "delete":
        m.exiting = why
    m._fail_start_waiters(why)
    m._cancel_backoff()
    if not keep_desired:
        m._set_desired("stopped")
    if m.pid is None:
        update.abort(m, update.interrupted(m, "a shutdown"))
        if m.job is not None:
            m.stop_waiters.append(rid)
            m.ending = True
            return
        m.emit(fx.Answer(rid, m.result(m.state.value)))
        m.end()
        return
    m.stop_waiters.append(rid)
    _stop_with(m, After.EXIT, why)


def _stop_with(m: FormationMachine, then: After, reason: str) -> None:
    if m.state is State.STOPPING:
        m.plan = StopPlan(then, reason)
    else:
        m._begin_stop(then, reason)


def _ensure_running(m: FormationMachine) -> bool:
    if m.desired != "running" or m.state not in (State.STOPPED, State.CRASHED) or _blocked(m):
        return False
    m.tracker.reset()
    m._spawn(requested=False, reason="reconcile")
    return True


def _probe_now(m: FormationMachine, rid: int) -> None:
    if m.state is not State.RUNNING or m.pid is None:
        m.emit(fx.Answer(rid, {"formation_id": m.id, "probing": False}))
        return
    m.emit(fx.ProbeOnce(m.gen, m.pid, m.spec.health, m.port))
    m.emit(fx.Answer(rid, {"formation_id": m.id, "probing": True}))

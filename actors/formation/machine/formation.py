"""FormationMachine: a formation's lifecycle as a sans-I/O state machine.

`handle(event, now)` takes one event (a numbered request, or the outcome of an earlier effect)
and returns the effects to carry out, in order. It owns no clock, no process, no file, no
socket and no database: times come in as `now`, processes are known by pid and by the
generation they are watched under, and the store, the routes, the replies and the bus are
effects. So every promise of the formation can be tested by feeding events and reading
effects (tests/test_formation_machine*.py), and the driver (`actors.formation.actor`) stays a
thin translation to trio.

The machine is one class over two files: the life of its process (`process_life.ProcessLife`)
and, here, what decides it: the dispatch of every event (a closed union, checked whole by
`assert_never`), the lifecycle requests (read from the tables in `requests.py`), the intents
of the update machine (`update.UpdateMachine`), and whether the proxy should hold requests
for the formation (`effects.ExpectRoute`). Its whole state is `state` (checked against
`lifecycle.ALLOWED`), the stop plan (against `stopping.REPLANS`), the update's phase (against
`update.PHASES`), the hold (`requests.HOLDS`), and who waits for what.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

from supervisor.core.errors import FsupError

from . import effects as fx
from . import requests
from .lifecycle import COMING_BACK, Desired, State
from .messages import (
    BeginJob,
    Boot,
    CancelUpdate,
    EnsureRunning,
    Event,
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
    ProcessEvent,
    Request,
    Requested,
    Restart,
    Shutdown,
    Spawned,
    SpawnFailed,
    Start,
    Stop,
    StopFinished,
    TimerFired,
)
from .process_life import ProcessLife, take
from .requests import Act, Exiting, Hold, Verdict
from .stopping import After
from .update import Ended, Intent, Job, Retired, Swap, SwitchInPlace


class FormationMachine(ProcessLife):
    # -- the interface ---------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[fx.Effect]:
        """Apply one event at time `now`; return the effects to carry out, in order."""
        self.now = now
        self._dispatch(event)
        self.ended_process = None  # an end that caused no transition is told by none
        out, self._out = self._out, []
        return self._with_route_expectation(out)

    @property
    def hold(self) -> Hold:
        """The sub-state that decides a request before the state does (`requests.HOLDS`)."""
        if self.exiting is not None:
            return Hold.EXITING
        if self.updates.switching:
            return Hold.SWITCHING
        return Hold.NONE

    def _with_route_expectation(self, out: list[fx.Effect]) -> list[fx.Effect]:
        """Say whether the route is coming back when that changes (`fx.ExpectRoute`)."""
        coming_back = self.desired is Desired.RUNNING and self.state in COMING_BACK
        if coming_back == self.route_expected:
            return out
        self.route_expected = coming_back
        expect = fx.ExpectRoute(coming_back)
        return [expect, *out] if coming_back else [*out, expect]

    def _dispatch(self, event: Event) -> None:
        match event:
            case Requested(rid=rid, request=request):
                self._on_request(rid, request)
            case BeginJob():
                self._emit_all(self.updates.begin(event, self.spec, self.version_dir, self.state))
            case Boot():
                self._boot(event)
            case Spawned() | SpawnFailed():
                if event.gen == self.gen and self.state is State.STARTING and self.pid is None:
                    self._on_spawn_outcome(event)
            case (
                Exited()
                | GateProgress()
                | GatePassed()
                | GateFailed()
                | ProbeResult()
                | PortTaken()
            ):
                self._route_process_event(event)
            case JobStaged() | JobFailed() | JobCleaned() | OldRetired():
                self._carry_out(self.updates.on_job_event(event, self.now))
            case TimerFired(gen=gen):
                if gen == self.gen and self.state is State.RESTARTING:
                    self.timer_gen = None
                    self._spawn("backoff_elapsed")
            case StopFinished(gen=gen):
                if gen == self.gen and self.state is State.STOPPING:
                    self._on_stop_finished(event)
            case _:
                assert_never(event)
        # Anything not acted on above was stale: from a process, timer or stop superseded.

    def _route_process_event(self, event: ProcessEvent) -> None:
        if event.gen == self.gen and self.pid is not None:
            self._on_process_event(event)
        elif self.updates.watches(event.gen):
            self._carry_out(self.updates.on_staging_event(event))

    # -- requests ------------------------------------------------------------------------------

    def _on_request(self, rid: int, request: Request) -> None:
        """A numbered request: answered now, or kept in a waiting list to answer later."""
        verdict = requests.verdict(self.hold, request)
        if verdict is Verdict.REFUSE:
            self.emit(fx.Answer(rid, error=self._hold_refusal()))
        elif verdict is Verdict.AWAIT_EXIT:
            self._set_desired(Desired.STOPPED)
            self.stop_waiters.append(rid)  # answered as the actor ends, stopped
        elif verdict is Verdict.DECLINE:
            self.emit(fx.Answer(rid, False))
        else:
            self._proceed(rid, request)

    def _proceed(self, rid: int, request: Request) -> None:
        match request:
            case Start():
                self._on_start(rid)
            case Stop():
                self._on_stop(rid)
            case Restart():
                self._on_restart(rid)
            case Shutdown(keep_desired=keep):
                self._on_shutdown(rid, keep)
            case EnsureRunning():
                self.emit(fx.Answer(rid, self._ensure_running()))
            case ProbeNow():
                self._probe_now(rid)
            case CancelUpdate():
                self._emit_all(self.updates.cancel(rid))
            case _:
                assert_never(request)

    def _hold_refusal(self) -> FsupError:
        if self.exiting is None:
            busy = self.updates.busy()
            assert busy is not None, "refused for a hold that is not there"
            return busy
        why = "being deleted" if self.exiting is Exiting.DELETE else "stopping because fsup stops"
        return FsupError(
            "FORMATION_BUSY",
            f"formation '{self.id}' is {why}; it cannot be started again",
            {"formation_id": self.id, "exiting": self.exiting.value},
        )

    def _on_start(self, rid: int) -> None:
        act = requests.START[self.state]
        if act is Act.REFUSE:
            self.emit(fx.Answer(rid, error=self._already_running()))
            return
        self._set_desired(Desired.RUNNING)
        self.start_waiters.append(rid)
        self.last_error = None  # the operator acted on it (the timeline keeps it)
        if act is Act.JOIN:
            return  # the start under way now has an operator waiting (`requested_start`)
        self.tracker.reset()
        self.restart_count = 0
        self._cancel_backoff()
        self._spawn("start")

    def _already_running(self) -> FsupError:
        if self.state is State.RUNNING:
            return FsupError(
                "FORMATION_ALREADY_RUNNING",
                f"formation '{self.id}' is already running; use restart to restart it",
            )
        return FsupError(
            "FORMATION_ALREADY_RUNNING",
            f"formation '{self.id}' is stopping; start it again once it has stopped",
        )

    def _on_stop(self, rid: int) -> None:
        act = requests.STOP[self.state]
        if act is Act.REFUSE:
            message = f"formation '{self.id}' is not running (stopped)"
            self.emit(fx.Answer(rid, error=FsupError("FORMATION_NOT_RUNNING", message)))
            return
        self._set_desired(Desired.STOPPED)
        self.last_error = None  # the operator acted on it (the timeline keeps it)
        self._fail_start_waiters("stop")
        if act is Act.SETTLE:
            self._cancel_backoff()
            self._to(State.STOPPED, "stop")
            self.emit(fx.Answer(rid, self.result("stopped")))
            return
        self.stop_waiters.append(rid)
        self._stop_under(After.STOPPED, "stop")

    def _on_restart(self, rid: int) -> None:
        self._set_desired(Desired.RUNNING)
        self.start_waiters.append(rid)
        self.last_error = None  # the operator acted on it (the timeline keeps it)
        self.tracker.reset()
        self.restart_count = 0
        act = requests.RESTART[self.state]
        if act is Act.STOP:
            stopping = {"stage": "stopping", "message": f"Stopping pid {self.pid}"}
            self.emit(fx.Progress(rid, stopping))
            self._begin_stop(After.START, "restart")
        elif act is Act.REPLAN:
            self._fail_stop_waiters("restart")
            self.plan = self.plan.replaced_by(After.START, "restart")
        else:
            self._cancel_backoff()
            self._spawn("restart")

    def _on_shutdown(self, rid: int, keep_desired: bool) -> None:
        why = Exiting.SHUTDOWN if keep_desired else Exiting.DELETE
        if self.exiting is not Exiting.DELETE:
            self.exiting = why
        self._fail_start_waiters(why.value)
        self._cancel_backoff()
        if not keep_desired:
            self._set_desired(Desired.STOPPED)
        if self.pid is None:
            self._emit_all(self.updates.interrupt("a shutdown"))
            if self.job is not None:
                self.stop_waiters.append(rid)  # answered once the job is undone (`ending`)
                return
            self.emit(fx.Answer(rid, self.result(self.state.value)))
            self.end()
            return
        self.stop_waiters.append(rid)
        self._stop_under(After.EXIT, why.value)

    def _stop_under(self, then: After, reason: str) -> None:
        if self.state is State.STOPPING:
            self.plan = self.plan.replaced_by(then, reason)
        else:
            self._begin_stop(then, reason)

    def _ensure_running(self) -> bool:
        if self.desired is not Desired.RUNNING or self.state not in requests.RECONCILE_FROM:
            return False
        self.tracker.reset()
        self._spawn("reconcile")
        return True

    def _probe_now(self, rid: int) -> None:
        if self.state is not State.RUNNING or self.pid is None:
            self.emit(fx.Answer(rid, {"formation_id": self.id, "probing": False}))
            return
        self.emit(fx.ProbeOnce(self.gen, self.pid, self.spec.health, self.port))
        self.emit(fx.Answer(rid, {"formation_id": self.id, "probing": True}))

    # -- the update's intents ------------------------------------------------------------------

    def _carry_out(self, intents: Sequence[Intent]) -> None:
        for intent in intents:
            match intent:
                case Swap(job=job):
                    self._swap(job)
                case SwitchInPlace(job=job):
                    self._switch_in_place(job)
                case Retired(job=job):
                    self._announce_update(job)
                case Ended():
                    if self.ending:
                        self.end()
                case _:
                    self.emit(intent)

    def _swap(self, job: Job) -> None:
        """The atomic switch: the store, then the route; then retire the old process."""
        assert job.pid is not None and job.port is not None
        old_pid, old_port, old_stop = self.pid, self.port, self.spec.stop
        self._store_new_version(job)
        self.emit(fx.PersistCurrent(job.spec.version, job.port, job.pid, job.started_at))
        if old_pid is not None:
            self.emit(fx.Unwatch(old_pid))  # its exit is expected from now on
        self.adopt_version(job.spec, job.version_dir, job.port)
        self.emit(fx.Promote(job.pid, old_pid))
        self.pid, self.gen = job.pid, job.gen  # the staging watchers now report for it
        self.spawned_at = job.spawned_at
        self.healthy_since = None
        self.mark_healthy()
        self.emit(fx.PublishRoute(job.port, job.pid, job.spec.version))
        self.emit(fx.Log("info", f"swapped to {job.spec.version} (pid {job.pid})"))
        self._emit_all(
            self.updates.progress(
                job, {"stage": "swapping", "message": f"Routing to {job.spec.version}"}
            )
        )
        stopping = f"Draining and stopping {job.previous_version}"
        self._emit_all(self.updates.progress(job, {"stage": "stopping_old", "message": stopping}))
        prune = job.kind == "update"
        self.emit(fx.RetireOld(job.id, old_pid, old_port, old_stop, prune=prune))

    def _switch_in_place(self, job: Job) -> None:
        """An update or rollback of a formation that is not running: switch the version."""
        self._store_new_version(job)
        self.emit(fx.PersistCurrent(job.spec.version, self.port, None, None))
        self.adopt_version(job.spec, job.version_dir, self.port)
        message = f"Now at {job.spec.version} (not started: the formation is {self.state})"
        self._emit_all(self.updates.progress(job, {"stage": "swapping", "message": message}))
        prune = job.kind == "update"
        self.emit(fx.RetireOld(job.id, None, None, job.spec.stop, prune=prune))

    def _store_new_version(self, job: Job) -> None:
        if job.manifest is not None:
            self.emit(fx.PersistVersion(job.spec, job.manifest, job.version_dir))

    def _announce_update(self, job: Job) -> None:
        result = {**self.result(self.state.value), "previous_version": job.previous_version}
        kind = "formation_updated" if job.kind == "update" else "formation_rolled_back"
        self.emit(
            fx.Publish(
                kind,
                {
                    "formation_id": self.id,
                    "version": self.spec.version,
                    "previous_version": job.previous_version,
                    "status": self.state.value,
                    "pid": self.pid,
                    "port": self.port,
                },
            )
        )
        for rid in take(job.waiters):
            self.emit(fx.Answer(rid, result))

"""The life of a formation's process, the base of `FormationMachine`: spawn, watch, serve,
exit, restart with backoff, crash, stop, end.

It is one class with `FormationMachine` (which adds the requests, the update's intents and the
dispatch of events, `formation.py`); the split is by concern, to keep each file readable. Rules
the two keep together:
- every transition goes through `lifecycle.check_transition` and is announced
  (`formation_state_changed`, with a reason from a fixed vocabulary: docs/decisions.md); a
  transition caused by the end of a process says how it ended (`exit`: code or signal, the
  stderr tail, the uptime), one into `crashed` says why (`error`, and a give-up's count and
  window);
- `last_error` says what last went wrong, and an unexpected end sets it: it is kept through
  the automatic restarts that follow, until the operator starts, restarts or stops the
  formation (the timeline keeps every one);
- every request is answered exactly once (an `Answer` effect), and the desired state is
  persisted before the answer of the request that changed it;
- a request that does not fit the state is answered with a clear error; an event that does
  not fit (stale, or for a phase already left) is ignored. Only a broken invariant raises.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from supervisor.core.errors import FsupError
from supervisor.core.manifest import FormationSpec

from . import effects as fx
from . import views
from .lifecycle import Desired, State, check_transition
from .messages import (
    Boot,
    Exited,
    GateFailed,
    GatePassed,
    GateProgress,
    PortTaken,
    ProbeResult,
    ProcessEvent,
    Spawned,
    SpawnFailed,
    StopFinished,
)
from .requests import Exiting
from .restart_policy import RestartTracker
from .stopping import After, StopPlan
from .update import EVENT_TAIL_CHARS, STDERR_TAIL_CHARS, Job, UpdateMachine
from .words import describe_exit, exit_details, health_event


class ProcessLife:
    def __init__(
        self,
        formation_id: str,
        spec: FormationSpec,
        version_dir: Path,
        port: int,
        *,
        restart_count: int = 0,
        rng: random.Random | None = None,
        gens: Iterator[int] | None = None,
    ) -> None:
        self.id = formation_id
        self.spec, self.version_dir, self.port = spec, version_dir, port
        self.state = State.STOPPED
        self.desired = Desired.RUNNING
        self.pid: int | None = None
        self.healthy: bool | None = None
        self.last_error: str | None = None
        self.last_exit_code: int | None = None
        self.restart_count = restart_count
        self.rng = rng or random.Random()
        self.tracker = RestartTracker(spec.restart, self.rng)
        self.gens = gens if gens is not None else itertools.count(1)
        self.gen = 0  # of the active process's watchers, of a stop, or of a backoff
        self.timer_gen: int | None = None
        self.healthy_since: float | None = None
        # When the process was spawned, in the machine's time (None: adopted, not known).
        self.spawned_at: float | None = None
        # How the last process ended, for the transition that follows in the same event.
        self.ended_process: dict[str, Any] | None = None
        self.unhealthy_since: float | None = None
        self.start_waiters: list[int] = []
        self.stop_waiters: list[int] = []
        self.plan = StopPlan(After.STOPPED, "stop")
        self.failure: FsupError | None = None  # what a failed requested start reports
        self.failure_message = ""
        self.updates = UpdateMachine(formation_id, self.gens)
        # Once a delete or shutdown is accepted: the actor ends once the process is stopped,
        # and no later request may start it or replace that plan (`requests.HOLDS`).
        self.exiting: Exiting | None = None
        self.ended = False
        self.route_expected: bool | None = None  # last `ExpectRoute` said (None: not yet)
        self.now = 0.0
        self._out: list[fx.Effect] = []

    # -- the interface ---------------------------------------------------------------------

    def emit(self, effect: fx.Effect) -> None:
        self._out.append(effect)

    def _emit_all(self, effects: Iterable[fx.Effect]) -> None:
        self._out.extend(effects)

    @property
    def requested_start(self) -> bool:
        """The current start has an operator waiting on it: if it fails, the formation is
        `crashed` and they are told, instead of the restart policy trying again."""
        return bool(self.start_waiters)

    @property
    def ending(self) -> bool:
        """Exiting, and the exit's own stop is over: the actor ends as soon as the update in
        flight (its staging or retiring process) is undone."""
        return self.exiting is not None and self.state is not State.STOPPING

    @property
    def job(self) -> Job | None:
        """The update or rollback in flight (`update.UpdateMachine` owns it)."""
        return self.updates.job

    def result(self, status: str) -> dict[str, Any]:
        """The answer to a lifecycle request (`views.result`)."""
        return views.result(self, status)

    # -- a process's life ------------------------------------------------------------------

    def _boot(self, event: Boot) -> None:
        self.desired = event.desired
        if event.adopted_pid is not None:
            self.emit(fx.Log("info", f"re-attaching to running pid {event.adopted_pid}"))
            self._attach(event.adopted_pid, gate=False)
            self._to(State.RUNNING, "adopted")
            self.emit(fx.PublishRoute(self.port, event.adopted_pid, self.spec.version))
            if event.desired is Desired.STOPPED:
                self._begin_stop(After.STOPPED, "stop")
        elif event.desired is Desired.RUNNING:
            self._spawn("restored")

    def _spawn(self, reason: str) -> None:
        self.gen = next(self.gens)
        self._to(State.STARTING, reason)
        self._emit_start(
            {"stage": "spawning", "message": f"Starting {' '.join(self.spec.command)}"}
        )
        self.emit(fx.Spawn(self.gen, self.spec, self.version_dir, self.port))

    def _on_spawn_outcome(self, event: Spawned | SpawnFailed) -> None:
        if isinstance(event, SpawnFailed):
            self._on_start_failure(event.message, None, failure=event.error)
            return
        self.emit(fx.PersistProcess(event.pid, event.started_at))
        self.emit(fx.Log("info", f"started pid {event.pid} on port {self.port}"))
        self._attach(event.pid, gate=True)
        self.spawned_at = self.now

    def _attach(self, pid: int, gate: bool) -> None:
        self.pid = pid
        self.spawned_at = None
        self.gen = next(self.gens)
        self.healthy_since = self.unhealthy_since = None
        self.healthy = None
        self.emit(fx.Watch(self.gen, pid, gate, self.spec.health, self.port))

    def _on_process_event(self, event: ProcessEvent) -> None:
        match event:
            case GateProgress():
                self._emit_start(health_event(event, self.spec.health))
            case GatePassed() if self.state is State.STARTING:
                assert self.pid is not None
                self.mark_healthy()
                self._to(State.RUNNING, "healthy")
                self.emit(fx.PublishRoute(self.port, self.pid, self.spec.version))
                result = self.result("running")
                for rid in take(self.start_waiters):
                    self.emit(fx.Answer(rid, result))
            case GateFailed(error=error, stderr_tail=tail) if self.state is State.STARTING:
                self._on_start_failure(error, None, still_running=True, tail=tail)
            case ProbeResult(error=error) if self.state is State.RUNNING:
                self._on_probe(error)
            case PortTaken(error=error) if self.state in (State.STARTING, State.RUNNING):
                self._on_port_taken(error)
            case Exited(returncode=code, stderr_tail=tail):
                self._on_exit(code, tail)

    def _on_probe(self, error: str | None) -> None:
        if error is None:
            self.mark_healthy()
            self.tracker.healthy_since(self.healthy_since, self.now)
            return
        if self.healthy is not False:
            self.emit(fx.Log("warning", f"health check failed: {error}"))
        self._set_healthy(False, error)
        self.healthy_since = None
        self.last_error = error
        if self.unhealthy_since is None:
            self.unhealthy_since = self.now
        elif self.now - self.unhealthy_since >= self.spec.health.timeout:
            self.failure_message = f"unhealthy for {self.spec.health.timeout:g}s: {error}"
            self._begin_stop(After.FAILURE, "unhealthy")

    def _on_port_taken(self, error: FsupError) -> None:
        """A stranger answers on our port: this process cannot serve there, starting or not.
        Stopping it withdraws the route at once; the restart that may follow checks the port
        before it spawns."""
        if self.state is State.STARTING:
            self._on_start_failure(error.message, None, still_running=True, failure=error)
            return
        self.emit(fx.Log("warning", error.message))
        self._set_healthy(False, error.message)
        self.last_error = self.failure_message = error.message
        self._begin_stop(After.FAILURE, "port_taken")

    def mark_healthy(self) -> None:
        self._set_healthy(True, None)
        self.unhealthy_since = None
        period = self.spec.health.liveness_period  # 0: no checks, so never stale
        self.emit(fx.MarkRouteHealthy(period if period > 0 else math.inf))
        if self.healthy_since is None:
            self.healthy_since = self.now

    def _on_exit(self, returncode: int | None, tail: str) -> None:
        self._emit_all(self.updates.interrupt("the running version exiting"))
        pid = self.pid
        self._note_end(returncode, tail)
        self._forget_process()
        self.last_exit_code = returncode
        self.emit(fx.Reap(pid))  # leftovers of its group must not hold the port
        described = describe_exit(returncode)
        if self.state is State.STARTING:
            self._on_start_failure(
                f"process {described} before it was healthy", returncode, tail=tail
            )
        elif self.state is State.RUNNING:
            self.emit(fx.Log("warning", f"process {described}"))
            self.last_error = f"process {described}"
            self._apply_restart_policy(returncode, "exited")

    def _on_start_failure(
        self,
        error: str,
        returncode: int | None,
        still_running: bool = False,
        tail: str = "",
        failure: FsupError | None = None,
    ) -> None:
        """The start did not reach healthy: the process exited, never answered, or could not
        be spawned. A requested start is reported and the formation is `crashed`; an automatic
        one goes back to the restart policy."""
        self.last_error = error
        details: dict[str, Any] = {"stage": "health_check", "formation_id": self.id}
        if tail:
            details["stderr_tail"] = tail[-STDERR_TAIL_CHARS:]
        if returncode is not None:
            details["exit_code"] = returncode
        self.failure = failure or FsupError("HEALTH_CHECK_FAILED", f"{self.id}: {error}", details)
        if still_running:
            self.failure_message = error
            then = After.CRASHED if self.requested_start else After.FAILURE
            self._begin_stop(then, "start_failed")
        elif self.requested_start:
            self._crash(error, "start_failed")
        else:
            self._apply_restart_policy(returncode, "start_failed")

    def _apply_restart_policy(self, returncode: int | None, cause: str) -> None:
        """`cause`, why the process is gone, is the reason of the transition that follows."""
        decision = self.tracker.on_exit(returncode, self.now, self.healthy_since)
        self.healthy_since = None
        if decision.restart:
            self.restart_count += 1
            self._to(State.RESTARTING, cause)
            self.emit(fx.Log("info", decision.reason))
            self.gen = self.timer_gen = next(self.gens)
            self.emit(fx.StartTimer(self.gen, decision.delay))
        elif decision.give_up:
            spec = self.tracker.spec
            gave_up = {
                "restarts": decision.restarts,
                "window_s": spec.window,
                "max_restarts": spec.max_restarts,
            }
            self._crash(decision.reason, "gave_up", {"gave_up": gave_up})
        else:
            self.emit(fx.Log("info", f"exited; {decision.reason}"))
            self._set_desired(Desired.STOPPED)
            self._to(State.STOPPED, cause)

    def _crash(self, message: str, reason: str, details: dict[str, Any] | None = None) -> None:
        self.emit(fx.Log("error", f"crashed: {message}"))
        self.last_error = message
        self._to(State.CRASHED, reason, {"error": message, **(details or {})})
        error = self.failure or FsupError(
            "HEALTH_CHECK_FAILED", f"{self.id}: {message}", {"formation_id": self.id}
        )
        for rid in take(self.start_waiters):
            self.emit(fx.Answer(rid, error=error))
        self.failure = None

    def _cancel_backoff(self) -> None:
        if self.timer_gen is not None:
            self.emit(fx.CancelTimer(self.timer_gen))
            self.timer_gen = None

    # -- stopping --------------------------------------------------------------------------

    def _begin_stop(self, then: After, reason: str) -> None:
        """Withdraw the route, then stop the current process; `StopFinished` brings us back."""
        self.plan = StopPlan(then, reason)
        self._emit_all(self.updates.interrupt(_interruption(then, reason)))
        self.emit(fx.WithdrawRoute())
        if self.pid is not None:
            self.emit(fx.Unwatch(self.pid))
        self._to(State.STOPPING, reason)
        self.gen = next(self.gens)
        self.emit(fx.StopProcess(self.gen, self.pid, self.spec.stop))

    def _on_stop_finished(self, event: StopFinished) -> None:
        self._note_end(event.returncode, "")
        self._forget_process()
        self.emit(fx.SweepStrays())  # a descendant that left the tree before it was stopped
        self.last_exit_code = event.returncode
        then, reason = self.plan.then, self.plan.reason
        if then is After.START:
            self._spawn("restart")
        elif then is After.FAILURE:
            self._apply_restart_policy(event.returncode, reason)
        elif then is After.CRASHED:
            self._crash(self.failure_message, reason)
        else:
            self._to(State.STOPPED, reason)
            if then is After.EXIT and self.job is not None:
                return  # a staging or retiring process is still being stopped: `ending`
            result = self.result("stopped")
            for rid in take(self.stop_waiters):
                self.emit(fx.Answer(rid, result))
            if then is After.EXIT:
                self.end()

    def _note_end(self, returncode: int | None, tail: str) -> None:
        """Remember how the process ended, for the transition it causes (`_to`)."""
        uptime = None if self.spawned_at is None else round(self.now - self.spawned_at, 3)
        self.ended_process = {
            "pid": self.pid,
            **exit_details(returncode),
            "stderr_tail": tail[-EVENT_TAIL_CHARS:],
            "uptime_s": uptime,
        }
        self.spawned_at = None

    def _forget_process(self) -> None:
        self.emit(fx.WithdrawRoute())
        if self.pid is not None:
            self.emit(fx.Unwatch(self.pid))
        self.pid = None
        self.healthy = None
        self.emit(fx.PersistProcess(None, None))

    def end(self) -> None:
        """The actor ends: everyone still waiting for a stop is answered first."""
        result = self.result(self.state.value)
        for rid in take(self.stop_waiters):
            self.emit(fx.Answer(rid, result))
        self.ended = True
        self.emit(fx.EndActor())

    # -- helpers -----------------------------------------------------------------------------

    def adopt_version(self, spec: FormationSpec, version_dir: Path, port: int) -> None:
        self.spec, self.version_dir, self.port = spec, version_dir, port
        self.tracker = RestartTracker(spec.restart, self.rng)

    def _to(self, new: State, reason: str, details: dict[str, Any] | None = None) -> None:
        """Check and announce a transition; the first after a process ended says how
        (`exit`), and `details` add what else explains it."""
        if new is self.state:
            return
        check_transition(self.state, new)
        old, self.state = self.state, new
        self.emit(fx.Log("info", f"{old.value} -> {new.value} ({reason})"))
        data: dict[str, Any] = {
            "formation_id": self.id,
            "from": old.value,
            "to": new.value,
            "reason": reason,
            "pid": self.pid,
            "version": self.spec.version,
            "restart_count": self.restart_count,
        }
        if self.ended_process is not None:
            data["exit"], self.ended_process = self.ended_process, None
        self.emit(fx.Publish("formation_state_changed", {**data, **(details or {})}))

    def _set_healthy(self, healthy: bool, error: str | None) -> None:
        """A change to good or bad is announced; back to unknown (no process) is not: the
        state change says it."""
        changed = healthy != self.healthy
        self.healthy = healthy
        if changed:
            self.emit(
                fx.Publish(
                    "formation_health_changed",
                    {"formation_id": self.id, "healthy": healthy, "error": error},
                )
            )

    def _set_desired(self, desired: Desired) -> None:
        if desired != self.desired:
            self.desired = desired
            self.emit(fx.PersistDesired(desired))

    def _emit_start(self, event: dict[str, Any]) -> None:
        for rid in self.start_waiters:
            self.emit(fx.Progress(rid, event))

    def _fail_stop_waiters(self, by: str) -> None:
        """A stop overtaken by a later request (a restart) is answered now: it will not end
        in `stopped`, and no one may be left waiting for it."""
        error = FsupError(
            "OPERATION_CANCELLED",
            f"the stop of '{self.id}' was overtaken by a {by} request",
            {"formation_id": self.id, "stage": "stopping"},
        )
        for rid in take(self.stop_waiters):
            self.emit(fx.Answer(rid, error=error))

    def _fail_start_waiters(self, by: str) -> None:
        error = FsupError(
            "OPERATION_CANCELLED",
            f"the start of '{self.id}' was interrupted by a {by} request",
            {"formation_id": self.id, "stage": "health_check"},
        )
        for rid in take(self.start_waiters):
            self.emit(fx.Answer(rid, error=error))


def _interruption(then: After, reason: str) -> str:
    """What interrupts an update when the running version is stopped, in words."""
    if then is After.EXIT:
        return f"a {reason} of the formation"  # a delete, or fsup's shutdown
    if then is After.STOPPED:
        return "a stop of the running version"
    if then is After.START:
        return "a restart of the running version"
    return "the running version failing"


def take(waiters: list[int]) -> list[int]:
    """Empty a waiting list, returning who was in it (each is answered once)."""
    taken = list(waiters)
    waiters.clear()
    return taken

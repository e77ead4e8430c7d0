"""The blue-green update (and rollback) as its own small machine inside the formation's.

An update goes through explicit phases instead of a set of flags, and every change of phase is
checked against `PHASES` (as the formation's states are against `lifecycle.ALLOWED`):

    PREPARING -> GATING -> RETIRING -> DONE            (a running formation)
    PREPARING -> RETIRING -> DONE                      (a stopped one: the version switches)
    PREPARING | GATING -> ABORTING -> CLEANED          (failed, cancelled, or interrupted)

PREPARING installs the version and (when the formation runs) spawns it on a staging port;
GATING waits for its health check while the old version keeps serving; the swap (store, then
route) is the step from GATING to RETIRING, after which the update can no longer be undone;
RETIRING drains and stops the old process. ABORTING undoes whatever PREPARING and GATING did.
Each phase accepts only its own events; anything else is stale and ignored. A job's requests
are answered when it ends (DONE or CLEANED), never before; an undone job is announced first
(`formation_update_aborted`: its stage, the error with the check's last one, its code).

`UpdateMachine` owns the job and answers for it; what it needs of the formation itself (make
the staging process the active one, switch the version in place, report the result, end the
actor) it returns as intents (`Swap`, `SwitchInPlace`, `Retired`, `Ended`) among its effects,
and `FormationMachine` carries them out. It never touches the formation's state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from supervisor.core.errors import FsupError
from supervisor.core.manifest import FormationSpec

from . import effects as fx
from .lifecycle import State
from .messages import (
    BeginJob,
    Exited,
    GateFailed,
    GatePassed,
    GateProgress,
    JobCleaned,
    JobEvent,
    JobFailed,
    JobStaged,
    JobTarget,
    OldRetired,
    PortTaken,
    ProbeResult,
    ProcessEvent,
)
from .words import describe_exit, health_event

STDERR_TAIL_CHARS = 2000
# The end of a stderr tail that an event carries (an answer keeps `STDERR_TAIL_CHARS`): the
# bus's history and each formation's timeline hold many events.
EVENT_TAIL_CHARS = 1000


class Phase(StrEnum):
    PREPARING = "preparing"  # installing files; spawning the staging process
    GATING = "gating"  # the staging process runs; waiting for its health check
    RETIRING = "retiring"  # swapped: draining and stopping the old process
    ABORTING = "aborting"  # undoing: stopping the staging process, giving its port back
    DONE = "done"
    CLEANED = "cleaned"


# The phases a job may enter from each phase.
PHASES: dict[Phase, frozenset[Phase]] = {
    Phase.PREPARING: frozenset({Phase.GATING, Phase.RETIRING, Phase.ABORTING}),
    Phase.GATING: frozenset({Phase.RETIRING, Phase.ABORTING}),
    Phase.RETIRING: frozenset({Phase.DONE}),
    Phase.ABORTING: frozenset({Phase.CLEANED}),
    Phase.DONE: frozenset(),
    Phase.CLEANED: frozenset(),
}
# Before its swap a job can be undone: cancelled, failed, or interrupted.
UNDOABLE = frozenset({Phase.PREPARING, Phase.GATING})
# A staging process exists (a node of the formation) in these phases.
STAGING = frozenset({Phase.GATING, Phase.ABORTING})


class IllegalPhase(RuntimeError):
    pass


@dataclass
class Job:
    """An update or rollback in flight: its own process, port and generation until the swap."""

    id: int
    kind: str  # "update" | "rollback"
    spec: FormationSpec
    version_dir: Path
    manifest: bytes | None  # an update's formation.yaml, stored at the swap
    previous_version: str  # the version serving until the swap (and after an abort)
    # Of a formation with no process: the version switches in place, and no start may run
    # the old version meanwhile (`requests.HOLDS`).
    offline: bool
    waiters: list[int] = field(default_factory=list)
    cancel_waiters: list[int] = field(default_factory=list)
    phase: Phase = Phase.PREPARING
    gen: int = 0
    pid: int | None = None
    port: int | None = None
    started_at: float | None = None
    spawned_at: float | None = None  # the staging process's spawn, in the machine's time
    failure: FsupError | None = None

    def enter(self, phase: Phase) -> None:
        if phase not in PHASES[self.phase]:
            raise IllegalPhase(f"{self.kind} {self.id}: {self.phase} -> {phase}")
        self.phase = phase


# -- what the update asks of the formation ------------------------------------------------


@dataclass(frozen=True)
class Swap:
    """The staging process passed its gate: store it, route to it, and retire the old one."""

    job: Job


@dataclass(frozen=True)
class SwitchInPlace:
    """No process to replace: the formation's version switches, and nothing starts."""

    job: Job


@dataclass(frozen=True)
class Retired:
    """The old version is retired: announce the new one and answer the job's requests."""

    job: Job


@dataclass(frozen=True)
class Ended:
    """The job is over (done or cleaned): a formation waiting to end may end now."""


Intent = fx.Effect | Swap | SwitchInPlace | Retired | Ended


class UpdateMachine:
    """At most one job at a time, from its request to its end."""

    def __init__(self, formation_id: str, gens: Iterator[int]) -> None:
        self.id = formation_id
        self.gens = gens
        self.job: Job | None = None

    @property
    def switching(self) -> bool:
        """A version switches in place (no process): nothing may start meanwhile."""
        return self.job is not None and self.job.offline

    def watches(self, gen: int) -> bool:
        """`gen` is the staging process's, waiting for its gate."""
        job = self.job
        return job is not None and job.phase is Phase.GATING and gen == job.gen

    def busy(self) -> FsupError | None:
        """The refusal of what must wait for the job in flight, if there is one."""
        return None if self.job is None else self._in_progress(self.job)

    # -- requests ----------------------------------------------------------------------------

    def begin(
        self, event: BeginJob, serving: FormationSpec, serving_dir: Path, state: State
    ) -> list[fx.Effect]:
        """An update or rollback request: check it, then start preparing (the runtime state
        is carried over from `serving_dir`, the serving version's folder)."""
        target = event.target
        refusal = self._refusal(target, serving, state)
        if refusal is not None:
            return [fx.Answer(event.rid, error=refusal)]
        job = Job(
            next(self.gens),
            target.kind,
            target.spec,
            target.version_dir,
            target.manifest,
            serving.version,
            offline=state is not State.RUNNING,
            waiters=[event.rid],
        )
        self.job = job
        return [
            fx.PrepareJob(
                job.id,
                job.kind,
                job.spec,
                job.version_dir,
                target.staged_dir,
                serving_dir,
                live=not job.offline,
            )
        ]

    def _refusal(self, target: JobTarget, serving: FormationSpec, state: State) -> FsupError | None:
        spec = target.spec
        if self.job is not None:
            return self._in_progress(self.job)
        if target.kind == "update" and spec.id != self.id:
            return FsupError(
                "INVALID_FORMATION",
                f"formation.yaml says id {spec.id!r}, but this is formation {self.id!r}",
                {"field": "id"},
            )
        if target.kind == "update" and spec.parsed_version <= serving.parsed_version:
            return FsupError(
                "VERSION_NOT_HIGHER",
                f"version {spec.version} is not higher than the current {serving.version}; "
                "bump the version in formation.yaml",
                {"current_version": serving.version, "version": spec.version},
            )
        if state not in (State.RUNNING, State.STOPPED, State.CRASHED):
            return FsupError(
                "FORMATION_BUSY",
                f"formation '{self.id}' is {state}; retry once it is running or stopped",
            )
        return None

    def _in_progress(self, job: Job) -> FsupError:
        cancel = (
            f", or POST /rpc/formations/{self.id}/cancel-update" if job.phase in UNDOABLE else ""
        )
        return FsupError(
            "UPDATE_IN_PROGRESS",
            f"an {job.kind} of '{self.id}' to {job.spec.version} is in progress; wait for it"
            f"{cancel}",
            {"kind": job.kind, "version": job.spec.version, "formation_id": self.id},
        )

    def cancel(self, rid: int) -> list[fx.Effect]:
        job = self.job
        if job is None or job.phase not in UNDOABLE:
            why = (
                "no update in progress" if job is None else "the update can no longer be cancelled"
            )
            return [fx.Answer(rid, {"formation_id": self.id, "cancelled": False, "message": why})]
        job.cancel_waiters.append(rid)
        return self.abort(
            FsupError(
                "OPERATION_CANCELLED",
                f"the {job.kind} of '{self.id}' to {job.spec.version} was cancelled",
                {"formation_id": self.id, "stage": "health_check"},
            )
        )

    def interrupt(self, by: str) -> list[fx.Effect]:
        """The formation's own life interrupts a job that has not swapped (`by` says how)."""
        if self.job is None:
            return []
        return self.abort(
            FsupError(
                "OPERATION_CANCELLED",
                f"the {self.job.kind} of '{self.id}' was interrupted by {by}",
                {"formation_id": self.id, "stage": "health_check"},
            )
        )

    def abort(self, error: FsupError) -> list[fx.Effect]:
        """Undo a job that has not swapped; its waiters get `error` once the cleanup is done.
        A job past its swap, or already aborting, is left alone."""
        job = self.job
        if job is None or job.phase not in UNDOABLE:
            return []
        job.failure = error
        job.enter(Phase.ABORTING)
        return [
            fx.Log("warning", f"{job.kind} to {job.spec.version} aborted: {error.message}"),
            fx.CleanUpJob(
                job.id, job.spec.stop, job.kind == "update", job.spec.version, job.version_dir
            ),
        ]

    # -- outcomes ----------------------------------------------------------------------------

    def on_job_event(self, event: JobEvent, now: float) -> Sequence[Intent]:
        """An outcome of the job's steps, at the machine's time `now`."""
        job = self.job
        if job is None or event.job != job.id:
            return []  # of a job already over
        match event:
            case JobFailed(error=error) if job.phase is Phase.PREPARING:
                return self.abort(error)
            case JobStaged(pid=None) if job.phase is Phase.PREPARING:
                job.enter(Phase.RETIRING)
                return [SwitchInPlace(job)]
            case JobStaged(pid=pid, port=port) if job.phase is Phase.PREPARING:
                assert pid is not None and port is not None
                job.spawned_at = now
                return self._gate(job, pid, port, event.started_at)
            case JobCleaned() if job.phase is Phase.ABORTING:
                return self._finish(job, Phase.CLEANED)
            case OldRetired() if job.phase is Phase.RETIRING:
                return [Retired(job), *self._finish(job, Phase.DONE)]
        return []  # a phase already left

    def _gate(self, job: Job, pid: int, port: int, started_at: float | None) -> list[fx.Effect]:
        job.gen, job.pid, job.port, job.started_at = next(self.gens), pid, port, started_at
        job.enter(Phase.GATING)
        staged = {
            "stage": "spawning_staging",
            "message": f"Started {job.spec.version} as pid {pid} on port {port}",
            "version": job.spec.version,
            "pid": pid,
            "port": port,
        }
        return [
            *self.progress(job, staged),
            fx.Watch(job.gen, pid, True, job.spec.health, port, staging=True),
        ]

    def on_staging_event(self, event: ProcessEvent) -> Sequence[Intent]:
        """An outcome of the staging process's watchers (`watches(event.gen)` holds)."""
        job = self.job
        assert job is not None and job.phase is Phase.GATING
        match event:
            case GateProgress():
                return self.progress(job, health_event(event, job.spec.health))
            case GatePassed():
                job.enter(Phase.RETIRING)
                return [Swap(job)]
            case GateFailed(error=error, stderr_tail=tail):
                return self.abort(self._staging_failure(job, error, None, tail))
            case PortTaken(error=error):
                return self.abort(error)
            case Exited(returncode=code, stderr_tail=tail):
                why = f"exited before it was healthy ({describe_exit(code)})"
                return self.abort(self._staging_failure(job, why, code, tail))
            case ProbeResult():
                return []  # a gated process is not probed
        raise AssertionError(f"unhandled staging event {event!r}")

    def _staging_failure(
        self, job: Job, error: str, returncode: int | None, tail: str
    ) -> FsupError:
        details: dict[str, Any] = {
            "stage": "health_check",
            "formation_id": self.id,
            "version": job.spec.version,
        }
        if tail:
            details["stderr_tail"] = tail[-STDERR_TAIL_CHARS:]
        if returncode is not None:
            details["exit_code"] = returncode
        return FsupError(
            "HEALTH_CHECK_FAILED",
            f"{self.id} {job.spec.version}: {error}; {job.previous_version} keeps serving",
            details,
        )

    def _finish(self, job: Job, phase: Phase) -> list[Intent]:
        job.enter(phase)
        self.job = None
        out: list[Intent] = []
        if job.failure is not None:
            out.append(fx.Publish("formation_update_aborted", self._aborted(job, job.failure)))
            out.extend(fx.Answer(rid, error=job.failure) for rid in _take(job.waiters))
        cancelled = {"formation_id": self.id, "cancelled": True, "version": job.previous_version}
        out.extend(fx.Answer(rid, cancelled) for rid in _take(job.cancel_waiters))
        out.append(Ended())
        return out

    def _aborted(self, job: Job, failure: FsupError) -> dict[str, Any]:
        """What the timeline says of an undone job: which, where it stopped, and why."""
        details = failure.details or {}
        data: dict[str, Any] = {
            "formation_id": self.id,
            "kind": job.kind,
            "version": job.spec.version,
            "previous_version": job.previous_version,
            "stage": details.get("stage"),
            "code": failure.code,
            "error": failure.message,
        }
        if "exit_code" in details:
            data["exit_code"] = details["exit_code"]
        if details.get("stderr_tail"):
            data["stderr_tail"] = str(details["stderr_tail"])[-EVENT_TAIL_CHARS:]
        return data

    @staticmethod
    def progress(job: Job, event: dict[str, Any]) -> list[fx.Effect]:
        return [fx.Progress(rid, event) for rid in job.waiters]


def _take(waiters: list[int]) -> list[int]:
    taken = list(waiters)
    waiters.clear()
    return taken

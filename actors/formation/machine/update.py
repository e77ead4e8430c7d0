"""The blue-green update (and rollback) as its own phase machine, part of `FormationMachine`.

An update goes through explicit phases instead of a set of flags:

    PREPARING -> GATING -> RETIRING -> DONE            (a running formation)
    PREPARING -> RETIRING -> DONE                      (a stopped one: the version switches)
    PREPARING | GATING -> ABORTING -> CLEANED          (failed, cancelled, or interrupted)

PREPARING installs the version and (when the formation runs) spawns it on a staging port;
GATING waits for its health check while the old version keeps serving; the swap (store, then
route) is the step from GATING to RETIRING, after which the update can no longer be cancelled;
RETIRING drains and stops the old process. ABORTING undoes whatever PREPARING and GATING did.
Each phase accepts only its own events; anything else is stale and ignored. A job's requests
are answered when it ends (DONE or CLEANED), never before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.core.errors import FsupError
from supervisor.core.manifest import FormationSpec

from . import effects as fx
from .messages import (
    BeginJob,
    Exited,
    GateFailed,
    GatePassed,
    GateProgress,
    JobCleaned,
    JobFailed,
    JobStaged,
    JobTarget,
    OldRetired,
    PortTaken,
)
from .views import describe_exit, health_event

if TYPE_CHECKING:
    from .formation import FormationMachine

STDERR_TAIL_CHARS = 2000


class Phase(StrEnum):
    PREPARING = "preparing"  # installing files; spawning the staging process
    GATING = "gating"  # the staging process runs; waiting for its health check
    RETIRING = "retiring"  # swapped: draining and stopping the old process
    ABORTING = "aborting"  # undoing: stopping the staging process, giving its port back
    DONE = "done"
    CLEANED = "cleaned"


@dataclass
class Job:
    """An update or rollback in flight: its own process, port and generation until the swap."""

    id: int
    kind: str  # "update" | "rollback"
    spec: FormationSpec
    version_dir: Path
    manifest: bytes | None  # an update's formation.yaml, stored at the swap
    previous_version: str
    # Of a formation with no process: the version switches in place, and no start may run
    # the old version meanwhile (`requests`).
    offline: bool
    waiters: list[int] = field(default_factory=list)
    cancel_waiters: list[int] = field(default_factory=list)
    phase: Phase = Phase.PREPARING
    gen: int = 0
    pid: int | None = None
    port: int | None = None
    started_at: float | None = None
    failure: FsupError | None = None


def begin(m: FormationMachine, event: BeginJob) -> None:
    """An update or rollback request: check it, then start preparing."""
    target = event.target
    refusal = _refusal(m, target)
    if refusal is not None:
        m.emit(fx.Answer(event.rid, error=refusal))
        return
    job = Job(
        next(m.gens),
        target.kind,
        target.spec,
        target.version_dir,
        target.manifest,
        m.spec.version,
        offline=m.state.value != "running",
        waiters=[event.rid],
    )
    m.job = job
    m.emit(
        fx.PrepareJob(
            job.id,
            job.kind,
            job.spec,
            job.version_dir,
            target.staged_dir,
            m.version_dir,
            live=not job.offline,
        )
    )


def _refusal(m: FormationMachine, target: JobTarget) -> FsupError | None:
    spec = target.spec
    if m.job is not None:
        return in_progress(m, m.job)
    if target.kind == "update" and spec.id != m.id:
        return FsupError(
            "INVALID_FORMATION",
            f"formation.yaml says id {spec.id!r}, but this is formation {m.id!r}",
            {"field": "id"},
        )
    if target.kind == "update" and spec.parsed_version <= m.spec.parsed_version:
        return FsupError(
            "VERSION_NOT_HIGHER",
            f"version {spec.version} is not higher than the current {m.spec.version}; "
            "bump the version in formation.yaml",
            {"current_version": m.spec.version, "version": spec.version},
        )
    if m.state.value not in ("running", "stopped", "crashed"):
        return FsupError(
            "FORMATION_BUSY",
            f"formation '{m.id}' is {m.state.value}; retry once it is running or stopped",
        )
    return None


def in_progress(m: FormationMachine, job: Job) -> FsupError:
    """The refusal of what must wait for `job`: another update, or a start of a formation
    whose version is being switched."""
    cancel = (
        f", or POST /rpc/formations/{m.id}/cancel-update"
        if job.phase in (Phase.PREPARING, Phase.GATING)
        else ""
    )
    return FsupError(
        "UPDATE_IN_PROGRESS",
        f"an {job.kind} of '{m.id}' to {job.spec.version} is in progress; wait for it{cancel}",
        {"kind": job.kind, "version": job.spec.version, "formation_id": m.id},
    )


def on_job_event(m: FormationMachine, job: Job, event: Any) -> None:
    match event:
        case JobFailed(error=error) if job.phase is Phase.PREPARING:
            abort(m, error)
        case JobStaged(pid=None) if job.phase is Phase.PREPARING:
            _switch_offline(m, job)
        case JobStaged(pid=pid, port=port) if job.phase is Phase.PREPARING:
            assert pid is not None and port is not None
            job.gen, job.pid, job.port, job.started_at = next(m.gens), pid, port, event.started_at
            job.phase = Phase.GATING
            _emit(
                m,
                job,
                {
                    "stage": "spawning_staging",
                    "message": f"Started {job.spec.version} as pid {pid} on port {port}",
                    "version": job.spec.version,
                    "pid": pid,
                    "port": port,
                },
            )
            m.emit(fx.Watch(job.gen, pid, True, job.spec.health, port, staging=True))
        case JobCleaned() if job.phase is Phase.ABORTING:
            _finish(m, job, Phase.CLEANED)
        case OldRetired() if job.phase is Phase.RETIRING:
            result = {**m.result(m.state.value), "previous_version": job.previous_version}
            kind = "formation_updated" if job.kind == "update" else "formation_rolled_back"
            m.emit(
                fx.Publish(
                    kind,
                    {
                        "formation_id": m.id,
                        "version": m.spec.version,
                        "previous_version": job.previous_version,
                        "status": m.state.value,
                        "pid": m.pid,
                        "port": m.port,
                    },
                )
            )
            for rid in _take(job.waiters):
                m.emit(fx.Answer(rid, result))
            _finish(m, job, Phase.DONE)


def on_staging_event(m: FormationMachine, job: Job, event: Any) -> None:
    """An outcome of the staging process's watchers (phase GATING only)."""
    match event:
        case GateProgress():
            _emit(m, job, health_event(event, job.spec.health))
        case GatePassed():
            _swap(m, job)
        case GateFailed(error=error, stderr_tail=tail):
            abort(m, _staging_failure(m, job, error, None, tail))
        case PortTaken(error=error):
            abort(m, error)
        case Exited(returncode=code, stderr_tail=tail):
            why = f"exited before it was healthy ({describe_exit(code)})"
            abort(m, _staging_failure(m, job, why, code, tail))


def _staging_failure(
    m: FormationMachine, job: Job, error: str, returncode: int | None, tail: str
) -> FsupError:
    details: dict[str, Any] = {
        "stage": "health_check",
        "formation_id": m.id,
        "version": job.spec.version,
    }
    if tail:
        details["stderr_tail"] = tail[-STDERR_TAIL_CHARS:]
    if returncode is not None:
        details["exit_code"] = returncode
    return FsupError(
        "HEALTH_CHECK_FAILED",
        f"{m.id} {job.spec.version}: {error}; {m.spec.version} keeps serving",
        details,
    )


def _swap(m: FormationMachine, job: Job) -> None:
    """The atomic switch: the store, then the route; then retire the old process."""
    assert job.pid is not None and job.port is not None
    old_pid, old_port, old_stop = m.pid, m.port, m.spec.stop
    _store_new_version(m, job)
    m.emit(fx.PersistCurrent(job.spec.version, job.port, job.pid, job.started_at))
    if old_pid is not None:
        m.emit(fx.Unwatch(old_pid))  # its exit is expected from now on
    m.adopt_version(job.spec, job.version_dir, job.port)
    m.emit(fx.Promote(job.pid, old_pid))
    m.pid, m.gen = job.pid, job.gen  # the staging watchers now report for the active process
    m.healthy_since = None
    m.mark_healthy()
    m.emit(fx.PublishRoute(job.port, job.pid, job.spec.version))
    job.phase = Phase.RETIRING
    m.emit(fx.Log("info", f"swapped to {job.spec.version} (pid {job.pid})"))
    _emit(m, job, {"stage": "swapping", "message": f"Routing to {job.spec.version}"})
    _emit(
        m,
        job,
        {"stage": "stopping_old", "message": f"Draining and stopping {job.previous_version}"},
    )
    m.emit(fx.RetireOld(job.id, old_pid, old_port, old_stop, prune=job.kind == "update"))


def _switch_offline(m: FormationMachine, job: Job) -> None:
    """An update or rollback of a formation that is not running: switch the version."""
    _store_new_version(m, job)
    m.emit(fx.PersistCurrent(job.spec.version, m.port, None, None))
    m.adopt_version(job.spec, job.version_dir, m.port)
    job.phase = Phase.RETIRING
    _emit(
        m,
        job,
        {
            "stage": "swapping",
            "message": f"Now at {job.spec.version} (not started: the formation is {m.state.value})",
        },
    )
    m.emit(fx.RetireOld(job.id, None, None, job.spec.stop, prune=job.kind == "update"))


def _store_new_version(m: FormationMachine, job: Job) -> None:
    if job.manifest is not None:
        m.emit(fx.PersistVersion(job.spec, job.manifest, job.version_dir))


def abort(m: FormationMachine, error: FsupError) -> None:
    """Undo a job that has not swapped; its waiters get `error` once the cleanup is done.
    A job past its swap, or already aborting, is left alone."""
    job = m.job
    if job is None or job.phase not in (Phase.PREPARING, Phase.GATING):
        return
    job.failure = error
    job.phase = Phase.ABORTING
    m.emit(fx.Log("warning", f"{job.kind} to {job.spec.version} aborted: {error.message}"))
    m.emit(
        fx.CleanUpJob(
            job.id, job.spec.stop, job.kind == "update", job.spec.version, job.version_dir
        )
    )


def cancel(m: FormationMachine, rid: int) -> None:
    job = m.job
    if job is None or job.phase not in (Phase.PREPARING, Phase.GATING):
        why = "no update in progress" if job is None else "the update can no longer be cancelled"
        m.emit(fx.Answer(rid, {"formation_id": m.id, "cancelled": False, "message": why}))
        return
    job.cancel_waiters.append(rid)
    abort(
        m,
        FsupError(
            "OPERATION_CANCELLED",
            f"the {job.kind} of '{m.id}' to {job.spec.version} was cancelled",
            {"formation_id": m.id, "stage": "health_check"},
        ),
    )


def interrupted(m: FormationMachine, by: str) -> FsupError:
    kind = m.job.kind if m.job is not None else "update"
    return FsupError(
        "OPERATION_CANCELLED",
        f"the {kind} of '{m.id}' was interrupted by {by}",
        {"formation_id": m.id, "stage": "health_check"},
    )


def _finish(m: FormationMachine, job: Job, phase: Phase) -> None:
    job.phase = phase
    m.job = None
    if job.failure is not None:
        for rid in _take(job.waiters):
            m.emit(fx.Answer(rid, error=job.failure))
    cancelled = {"formation_id": m.id, "cancelled": True, "version": m.spec.version}
    for rid in _take(job.cancel_waiters):
        m.emit(fx.Answer(rid, cancelled))
    if m.ending:
        m.end()


def _emit(m: FormationMachine, job: Job, event: dict[str, Any]) -> None:
    for rid in job.waiters:
        m.emit(fx.Progress(rid, event))


def _take(waiters: list[int]) -> list[int]:
    taken = list(waiters)
    waiters.clear()
    return taken

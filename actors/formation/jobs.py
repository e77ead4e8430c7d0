"""The I/O of an update or rollback, for the driver: install, stage, promote, retire, undo.

The machine decides the phases (`update.py`); this carries out their effects in the actor's
nursery and posts their outcomes back. While a preparation runs, only it writes the job's
staging process and port, so an abort's cleanup first waits for it to finish (it is cancelled,
and bounded) and then finds everything it must undo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from supervisor.core.errors import FsupError
from supervisor.core.timestamps import rfc3339_now as now_rfc3339
from supervisor.runtime.routing import Backend
from supervisor.storage import versions
from supervisor.storage.store import VersionRow

from .. import listener
from ..base import ActorError
from ..port_requests import ReleasePort
from ..process import ProcessHandle, SpawnError
from .machine import effects as fx
from .machine.messages import JobCleaned, JobFailed, JobStaged, OldRetired

if TYPE_CHECKING:
    from .actor import FormationActor

log = logging.getLogger("fsup.formation")

# How long a swap waits for in-flight proxied requests to finish on the old process.
DRAIN_BOUND_S = 30.0


@dataclass
class _Run:
    """One job's preparation: its scope, and what it has set up so far."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    process: ProcessHandle | None = None
    port: int | None = None


class JobRunner:
    def __init__(self, actor: FormationActor) -> None:
        self.actor = actor
        self.runs: dict[int, _Run] = {}
        self.replaced: Backend | None = None  # the route a swap replaced, to drain

    def do(self, effect: fx.Effect) -> bool:
        nursery = self.actor.nursery
        assert nursery is not None
        match effect:
            case fx.PrepareJob():
                self.runs[effect.job] = run = _Run()
                nursery.start_soon(self._prepare, effect, run)
            case fx.Promote(pid=pid, old_pid=old_pid):
                kept = self.actor.kept
                kept.extra_pids.discard(pid)
                if old_pid is not None:
                    kept.extra_pids.add(old_pid)
            case fx.RetireOld():
                backend, self.replaced = self.replaced, None
                nursery.start_soon(self._retire, effect, backend)
            case fx.CleanUpJob():
                run = self.runs[effect.job]
                run.scope.cancel(reason="job aborted")
                if run.process is not None:
                    self.actor._do_process(fx.Unwatch(run.process.pid))
                nursery.start_soon(self._clean_up, effect, run)
            case _:
                raise AssertionError(f"no driver for {effect!r}")
        return True

    async def _prepare(self, job: fx.PrepareJob, run: _Run) -> None:
        """Install the version, carry the runtime state over, and (when the formation is
        running) start the new version on a second port."""
        actor = self.actor
        error: FsupError | None = None
        try:
            with run.scope:
                if job.staged_dir is not None:
                    await trio.to_thread.run_sync(versions.install, job.staged_dir, job.version_dir)
                await trio.to_thread.run_sync(
                    versions.carry_runtime_state, job.current_dir, job.version_dir
                )
                if job.live:
                    await self._stage(job, run)
        except FsupError as exc:
            error = exc
        except SpawnError as exc:
            error = FsupError(
                "HEALTH_CHECK_FAILED",
                f"{actor.id} {job.spec.version}: {exc}",
                {"stage": "spawning_staging", "formation_id": actor.id},
            )
        except (OSError, ActorError, trio.TooSlowError) as exc:
            error = FsupError("INTERNAL", f"{job.kind} of '{actor.id}' failed: {exc!r}")
        finally:
            run.done.set()
        # Shielded so an abort cannot lose the news; bounded so a full, unread mailbox (the
        # actor itself ending) cannot hold this task forever.
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            if error is not None:
                await actor.post(JobFailed(job.job, error))
            elif not run.scope.cancelled_caught:
                process = run.process
                await actor.post(
                    JobStaged(
                        job.job,
                        process.pid if process else None,
                        run.port,
                        process.started_at if process else None,
                    )
                )

    async def _stage(self, job: fx.PrepareJob, run: _Run) -> None:
        actor = self.actor
        assert actor.ctx.fleet is not None
        run.port = port = await listener.staging_port(
            actor.ctx.fleet, actor.ctx.listeners, actor.id, actor.machine.spec.version
        )
        launch = actor.launch_spec(job.spec, job.version_dir, port)
        with actor._strays.spawning():
            run.process = process = await actor.ctx.launcher.spawn(launch)
        actor._handles[process.pid] = process
        actor.kept.extra_pids.add(process.pid)

    async def _retire(self, job: fx.RetireOld, backend: Backend | None) -> None:
        """Let in-flight requests finish on the old process (bounded), stop it, give back
        its port, prune old versions."""
        actor = self.actor
        self.runs.pop(job.job, None)
        if job.pid is not None:
            if backend is not None:
                with trio.move_on_after(DRAIN_BOUND_S):
                    await backend.drained()
            process = actor._handles.pop(job.pid, None)
            if process is not None:
                await process.stop(job.stop.signum, job.stop.timeout)
            actor.kept.extra_pids.discard(job.pid)
        if job.port is not None:
            await self.release_port(job.port)
        if job.prune:
            await self._prune_versions()
        await actor.post(OldRetired(job.job))

    async def _clean_up(self, job: fx.CleanUpJob, run: _Run) -> None:
        actor = self.actor
        await run.done.wait()
        self.runs.pop(job.job, None)
        if run.process is not None:
            await run.process.stop(job.stop.signum, job.stop.timeout)
            actor.kept.extra_pids.discard(run.process.pid)
            actor._handles.pop(run.process.pid, None)
        if run.port is not None:
            await self.release_port(run.port)
        if job.remove_version:
            store = actor.ctx.store
            if store.version(actor.id, job.version) is not None:
                store.delete_version(actor.id, job.version)
            await trio.to_thread.run_sync(versions.remove, job.version_dir)
        await actor.post(JobCleaned(job.job))

    def store_version(self, effect: fx.PersistVersion) -> None:
        actor = self.actor
        row = VersionRow(
            actor.id, effect.spec.version, effect.manifest, str(effect.version_dir), now_rfc3339()
        )
        actor.ctx.store.put_version(row)

    async def _prune_versions(self) -> None:
        actor = self.actor
        stored = {row.version: row for row in actor.ctx.store.versions(actor.id)}
        for version in versions.to_prune(list(stored), actor.machine.spec.version):
            actor.ctx.store.delete_version(actor.id, version)
            await trio.to_thread.run_sync(versions.remove, Path(stored[version].path))
            log.info("%s: pruned version %s", actor.id, version)

    async def release_port(self, port: int) -> None:
        fleet = self.actor.ctx.fleet
        if fleet is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await fleet.ask(ReleasePort(self.actor.id, port))
            except ActorError:
                pass

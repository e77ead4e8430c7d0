"""The I/O of an update or rollback, for the driver: install, stage, promote, retire, undo.

The machine decides the phases (`update.py`); this carries out their effects in the actor's
nursery and posts their outcomes back. While a preparation runs, only it writes the job's
staging process and port, so an abort's cleanup first waits for it to finish (it is cancelled,
and bounded) and then finds everything it must undo.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import assert_never

import trio

from supervisor.core.errors import FsupError
from supervisor.runtime.routing import Backend
from supervisor.storage import version_logs, versions
from supervisor.storage.store import Store

from .. import listener
from ..base import ActorError, ActorRef
from ..listener import ListenerCheck
from ..port_requests import ReleasePort
from ..process import ProcessHandle, StraySweeper
from ..spawn import Launcher, SpawnError
from .context import Kept
from .launch import LaunchSpecFor
from .machine import effects as fx
from .machine.messages import JobCleaned, JobFailed, JobStaged, OldRetired
from .processes import ProcessRegistry
from .watchers import Post

log = logging.getLogger("fsup.formation")

# How long a swap waits for in-flight proxied requests to finish on the old process.
DRAIN_BOUND_S = 30.0

# The effects of an update or rollback: this runner carries out these, and only these.
JobEffect = fx.PrepareJob | fx.Promote | fx.RetireOld | fx.CleanUpJob


@dataclass(frozen=True)
class JobPorts:
    """What the job runner is handed instead of the actor that owns it: where outcomes go
    (`post`), the services it calls, the process table and stray sweeper it shares with the
    actor, the record that outlives the actor, and how a launch is built. Each is a public
    interface; a test builds these from fakes and needs no actor."""

    formation_id: str
    post: Post
    store: Store
    launcher: Launcher
    listeners: ListenerCheck
    fleet: ActorRef | None  # staging ports come from the fleet's pool and go back to it
    processes: ProcessRegistry
    strays: StraySweeper
    kept: Kept
    launch_spec: LaunchSpecFor
    serving_version: Callable[[], str]  # the version the formation serves now
    log_dir: Path | None = None  # the keeper's files by version, pruned with the versions


@dataclass
class _Run:
    """One job's preparation: its scope, and what it has set up so far."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    process: ProcessHandle | None = None
    port: int | None = None


class JobRunner:
    def __init__(self, ports: JobPorts) -> None:
        self.ports = ports
        self.id = ports.formation_id
        self._runs: dict[int, _Run] = {}
        self._replaced: Backend | None = None  # the route a swap replaced, to drain

    def route_replaced(self, backend: Backend | None) -> None:
        """A route was published over `backend` (None: over no route): when that publication
        was an update's swap, the next `RetireOld` drains `backend` before stopping it."""
        self._replaced = backend

    def do(self, effect: JobEffect, nursery: trio.Nursery) -> None:
        """Carry out `effect`; what takes time runs in `nursery` (the actor's) and posts its
        outcome back."""
        match effect:
            case fx.PrepareJob():
                self._runs[effect.job] = run = _Run()
                nursery.start_soon(self._prepare, effect, run)
            case fx.Promote(pid=pid, old_pid=old_pid):
                kept = self.ports.kept
                kept.extra_pids.discard(pid)
                if old_pid is not None:
                    kept.extra_pids.add(old_pid)
            case fx.RetireOld():
                backend, self._replaced = self._replaced, None
                nursery.start_soon(self._retire, effect, backend)
            case fx.CleanUpJob():
                run = self._runs[effect.job]
                run.scope.cancel(reason="job aborted")
                if run.process is not None:
                    self.ports.processes.unwatch(run.process.pid)
                nursery.start_soon(self._clean_up, effect, run)
            case _:
                assert_never(effect)

    async def _prepare(self, job: fx.PrepareJob, run: _Run) -> None:
        """Install the version, carry the runtime state over, and (when the formation is
        running) start the new version on a second port."""
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
                f"{self.id} {job.spec.version}: {exc}",
                {"stage": "spawning_staging", "formation_id": self.id},
            )
        except (OSError, ActorError, trio.TooSlowError) as exc:
            error = FsupError("INTERNAL", f"{job.kind} of '{self.id}' failed: {exc!r}")
        finally:
            run.done.set()
        # Shielded so an abort cannot lose the news; bounded so a full, unread mailbox (the
        # actor itself ending) cannot hold this task forever.
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            if error is not None:
                await self.ports.post(JobFailed(job.job, error))
            elif not run.scope.cancelled_caught:
                process = run.process
                await self.ports.post(
                    JobStaged(
                        job.job,
                        process.pid if process else None,
                        run.port,
                        process.started_at if process else None,
                    )
                )

    async def _stage(self, job: fx.PrepareJob, run: _Run) -> None:
        ports = self.ports
        assert ports.fleet is not None
        run.port = port = await listener.staging_port(
            ports.fleet, ports.listeners, self.id, ports.serving_version()
        )
        launch = ports.launch_spec(job.spec, job.version_dir, port)
        with ports.strays.spawning():
            run.process = process = await ports.launcher.spawn(launch)
        ports.processes.add(process)
        ports.kept.extra_pids.add(process.pid)

    async def _retire(self, job: fx.RetireOld, backend: Backend | None) -> None:
        """Let in-flight requests finish on the old process (bounded), stop it, give back
        its port, prune old versions."""
        self._runs.pop(job.job, None)
        if job.pid is not None:
            if backend is not None:
                with trio.move_on_after(DRAIN_BOUND_S):
                    await backend.drained()
            process = self.ports.processes.pop(job.pid)
            if process is not None:
                await process.stop(job.stop.signum, job.stop.timeout)
            self.ports.kept.extra_pids.discard(job.pid)
        if job.port is not None:
            await self._release_port(job.port)
        if job.prune:
            await self._prune_versions()
        await self.ports.post(OldRetired(job.job))

    async def _clean_up(self, job: fx.CleanUpJob, run: _Run) -> None:
        await run.done.wait()
        self._runs.pop(job.job, None)
        if run.process is not None:
            await run.process.stop(job.stop.signum, job.stop.timeout)
            self.ports.kept.extra_pids.discard(run.process.pid)
            self.ports.processes.pop(run.process.pid)
        if run.port is not None:
            await self._release_port(run.port)
        if job.remove_version:
            store = self.ports.store
            if store.version(self.id, job.version) is not None:
                store.delete_version(self.id, job.version)
            await trio.to_thread.run_sync(versions.remove, job.version_dir)
            await self._prune_logs()
        await self.ports.post(JobCleaned(job.job))

    async def _prune_versions(self) -> None:
        store = self.ports.store
        stored = {row.version: row for row in store.versions(self.id)}
        for version in versions.to_prune(list(stored), self.ports.serving_version()):
            store.delete_version(self.id, version)
            await trio.to_thread.run_sync(versions.remove, Path(stored[version].path))
            log.info("%s: pruned version %s", self.id, version)
        await self._prune_logs()

    async def _prune_logs(self) -> None:
        """The log files of versions gone with them, but the last failed updates' (evidence)."""
        if self.ports.log_dir is None:
            return
        kept = {row.version for row in self.ports.store.versions(self.id)}
        try:
            await trio.to_thread.run_sync(version_logs.prune, self.ports.log_dir, kept)
        except OSError as exc:
            log.warning("%s: could not remove old versions' logs: %s", self.id, exc)

    async def _release_port(self, port: int) -> None:
        fleet = self.ports.fleet
        if fleet is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await fleet.ask(ReleasePort(self.id, port))
            except ActorError:
                pass

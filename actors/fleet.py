"""FleetActor: the root actor. Knows which formations exist; creates and removes them.

It owns the port pool and the registry of formation actors, which it runs under a one-for-one
`Supervisor`. It never waits on a formation inside its message loop: anything slow (a first
start, a stop before a delete) runs in a background task that posts back when done, so
listing formations never waits behind someone else's deploy.

On start it restores the store's formations: a recorded process that is still alive (same pid,
same start time) is adopted; a process that carries this home's marker but belongs to no
formation (spawned just before a crash, before its pid was stored) is killed, so a formation
never has two live processes.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sqlite3
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from supervisor.core.errors import FsupError
from supervisor.core.manifest import FormationSpec, parse_manifest
from supervisor.core.timestamps import rfc3339_now as now_rfc3339
from supervisor.runtime.ports import PortPool
from supervisor.storage import failed_deploys
from supervisor.storage.store import VersionRow

from .base import DEFERRED, Actor, ActorError, ActorRef, Reply
from .fleet_entries import (
    Entry,
    FailedStart,
    already_exists,
    being_deleted,
    forward_start,
    kill_unowned_of,
    relay_start,
    remove_files,
    supervise,
    until_ended,
)
from .fleet_messages import (
    Create as Create,
)
from .fleet_messages import (
    Delete as Delete,
)
from .fleet_messages import (
    Describe as Describe,
)
from .fleet_messages import (
    ListEntries as ListEntries,
)
from .fleet_messages import (
    ListFormations as ListFormations,
)
from .fleet_messages import (
    Lookup as Lookup,
)
from .fleet_messages import (
    PortStatus as PortStatus,
)
from .fleet_messages import (
    Reconcile as Reconcile,
)
from .fleet_messages import (
    Restore as Restore,
)
from .fleet_messages import (
    ShutdownAll as ShutdownAll,
)
from .formation import EnsureRunning, Shutdown
from .formation.actor import FormationActor
from .formation.context import FormationContext, Kept
from .log_rotation import serve_log_rotation
from .port_requests import AllocatePort, ReleasePort
from .process import adopt, kill_strays
from .supervision import Intensity
from .unrestorable import Revive, UnrestorableFormation, unusable

log = logging.getLogger("fsup.fleet")

# The longest a removal waits for a formation to stop: the largest stop.timeout a manifest may
# set (300 s) plus the SIGKILL grace; past it the process is killed outright.
REMOVE_BOUND_S = 300.0 + 15.0


@dataclass(frozen=True)
class _Removed:
    formation_id: str


class FleetActor(Actor):
    name = "fleet"

    def __init__(
        self,
        ctx: FormationContext,
        ports: PortPool,
        intensity: Intensity = Intensity(),
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.ports = ports
        self.intensity = intensity
        self.formations: dict[str, Entry] = {}
        self.restored = trio.Event()
        # fsup is stopping: a first start cut short by it is kept, for the next start to run.
        self._shutting_down = False

    async def on_start(self) -> None:
        assert self.nursery is not None
        self.ctx.fleet = self.ref
        self.nursery.start_soon(serve_log_rotation, self._log_dirs, self.ctx.log_limits)
        if self.ctx.server_url:
            # A restarted incarnation: the server listens already; rebuild from the store
            # (the formations' processes are adopted again, as after a crash of fsup).
            await self._restore()

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        match message:
            case Restore(server_url=url):
                if not self.restored.is_set():
                    self.ctx.server_url = url
                    await self._restore()
                return None
            case Create():
                return await self._create(message, reply)
            case Lookup(formation_id=fid, change=change):
                return (self._entry(fid) if change else self._visible(fid)).ref
            case Describe(formation_id=fid):
                found = self._visible(fid)
                return found.ref, found.removing
            case ListFormations():
                return [(fid, e.ref) for fid, e in self.formations.items() if not e.removing]
            case ListEntries():
                return [(fid, e.ref, e.removing) for fid, e in self.formations.items()]
            case Delete(formation_id=fid):
                return self._delete(fid, reply)
            case PortStatus():
                return self.ports.statistics()
            case AllocatePort(formation_id=fid):
                owner = self._entry(fid)  # an unknown id must not take a port from the pool
                port = self.ports.allocate()
                owner.ports.add(port)
                return port
            case ReleasePort(formation_id=fid, port=port):
                entry = self.formations.get(fid)
                if entry is not None and port in entry.ports:
                    entry.ports.discard(port)
                    self.ports.release(port)
                return None
            case Reconcile():
                killed = await kill_unowned_of(self.formations, self.ctx.home.root)
                for entry in self.formations.values():
                    if entry.removing:
                        continue  # its actor is ending: nothing to start
                    try:
                        entry.ref.tell_nowait(EnsureRunning())
                    except (ActorError, trio.WouldBlock):
                        pass  # busy or gone: the next reconcile will see it again
                return {"formations": len(self.formations), "strays_killed": killed}
            case ShutdownAll():
                return self._shutdown_all(reply)
            case Revive(formation_id=fid, reply=waiter):
                await self._revive(fid, waiter)
                return None
            case _Removed(formation_id=fid):
                await self._finish_removal(fid)
                return None
        raise FsupError("INVALID_REQUEST", f"unknown message {type(message).__name__}")

    def _log_dirs(self) -> list[tuple[str, Path]]:
        return [(fid, entry.logs) for fid, entry in self.formations.items() if not entry.removing]

    def _entry(self, formation_id: str) -> Entry:
        """A formation that is not being deleted (what the fleet's own work may change)."""
        entry = self._visible(formation_id)
        if entry.removing:
            raise being_deleted(formation_id, entry)
        return entry

    def _visible(self, formation_id: str) -> Entry:
        """A formation that exists, being deleted or not (404 only once it is gone)."""
        entry = self.formations.get(formation_id)
        if entry is None:
            raise FsupError(
                "FORMATION_NOT_FOUND",
                f"formation '{formation_id}' not found",
                {"formation_id": formation_id},
            )
        return entry

    # -- restore ---------------------------------------------------------------------------

    async def _restore(self) -> None:
        rows = self.ctx.store.formations()
        adopted: dict[str, Kept] = {}
        for row in rows:
            logs = partial(
                self.ctx.launcher.adopted_log,
                self.ctx.home.formation_logs(row.id),
                row.current_version,
            )
            process = adopt(row.pid, row.pid_started, logs)
            if process is not None:
                log.info("%s: adopting pid %s from an earlier fsup", row.id, process.pid)
            adopted[row.id] = Kept(process=process)
        await trio.to_thread.run_sync(self._kill_strays, adopted)
        for row in rows:
            if row.deleting:
                log.warning("resuming the delete of %s interrupted by a restart of fsup", row.id)
        for row in rows:
            # Reserved even if the formation cannot be restored: its row still claims it.
            self.ports.reserve(row.port)
        # Side by side: an actor's start spawns its process (a port check in a worker thread,
        # then the spawn), and 100 of them one after another held the restore up for a second.
        async with trio.open_nursery() as starting:
            for row in rows:
                starting.start_soon(self._start_actor, row.id, row.port, adopted[row.id])
        for row in rows:
            if row.deleting:  # its actor stops the process at once (desired: stopped)
                self.formations[row.id].resumed = True
                self._begin_removal(row.id)
        self.restored.set()
        self.ctx.routes.restored()  # the proxy stops holding requests for the restore

    def _kill_strays(self, adopted: dict[str, Kept]) -> None:
        self._kill_strays_of({k.process.pid for k in adopted.values() if k.process is not None})

    def _kill_strays_of(self, owned: set[int]) -> int:
        """Kill processes of this home that descend from none of `owned`; return how many."""
        return kill_strays(self.ctx.home.root, None, owned)

    def _current_version(self, formation_id: str, version: str) -> tuple[FormationSpec, Path]:
        row = self.ctx.store.version(formation_id, version)
        if row is None:
            raise LookupError(f"version {version} is missing from the store")
        return parse_manifest(row.manifest, self.ctx.restart_defaults), Path(row.path)

    async def _start_actor(self, formation_id: str, port: int, kept: Kept) -> ActorRef:
        assert self.nursery is not None
        self.ctx.routes.register(formation_id)
        ended, scope = trio.Event(), trio.CancelScope()
        ref: ActorRef = await self.nursery.start(
            supervise,
            f"formation:{formation_id}",
            lambda: self._incarnation(formation_id, kept),
            self.intensity,
            ended,
            scope,
            lambda: not self._removing(formation_id, ended),
        )
        logs = self.ctx.home.formation_logs(formation_id)
        self.formations[formation_id] = Entry(ref, {port}, kept, logs, ended, scope)
        return ref

    def _removing(self, formation_id: str, ended: trio.Event) -> bool:
        """The formation whose supervision `ended` belongs to is being removed (its actor is
        not restarted after a crash; gone from the fleet counts as removed)."""
        entry = self.formations.get(formation_id)
        return entry is None or entry.ended is not ended or entry.removing

    def _incarnation(self, formation_id: str, kept: Kept) -> Actor:
        """The formation's actor as the store describes it now (each restart reads it
        afresh); one whose stored version does not load stays listed as unrestorable."""
        row = self.ctx.store.formation(formation_id)
        if row is None:
            raise LookupError(f"formation {formation_id} is not in the store")
        try:
            spec, version_dir = self._current_version(formation_id, row.current_version)
        except (FsupError, LookupError) as exc:
            reason = exc.message if isinstance(exc, FsupError) else str(exc)
            log.error("%s: cannot restore (%s); kept, listed as crashed", formation_id, reason)
            return UnrestorableFormation(self.ctx, row, reason)
        return FormationActor(self.ctx, formation_id, spec, version_dir, row.port, kept)

    async def _revive(self, formation_id: str, reply: Reply | None) -> None:
        """Replace an unrestorable formation's actor by one loaded from the store (after an
        update, or to retry) and start it; the formation stays listed whatever happens."""
        entry = self.formations.get(formation_id)
        if entry is None or entry.removing:
            if reply is not None:
                reply.fail(
                    FsupError("FORMATION_NOT_FOUND", f"formation '{formation_id}' not found")
                )
            return
        ref = await self._start_actor(formation_id, next(iter(entry.ports)), Kept())
        row = self.ctx.store.formation(formation_id)
        try:
            self._current_version(formation_id, row.current_version if row else "")
        except (FsupError, LookupError) as exc:
            reason = exc.message if isinstance(exc, FsupError) else str(exc)
            if reply is not None:
                reply.fail(unusable(formation_id, reason, "start"))
            return
        assert self.nursery is not None
        self.nursery.start_soon(forward_start, ref, reply)

    # -- create ----------------------------------------------------------------------------

    async def _create(self, message: Create, reply: Reply | None) -> Any:
        spec = message.spec
        if not self.restored.is_set():
            raise FsupError(
                "FORMATION_UNAVAILABLE", "fsup is still restoring its formations; retry shortly"
            )
        if spec.id in self.formations:
            entry = self.formations[spec.id]
            raise being_deleted(spec.id, entry) if entry.removing else already_exists(spec.id)
        port = self.ports.allocate()
        version_dir = self.ctx.home.version_dir(spec.id, spec.version)
        row = VersionRow(spec.id, spec.version, message.manifest, str(version_dir), now_rfc3339())
        try:
            # The store claims the id first; only then may the disk be touched.
            self.ctx.store.insert_formation(spec.id, port, row)
        except sqlite3.IntegrityError:
            self.ports.release(port)
            raise already_exists(spec.id) from None
        except BaseException:
            self.ports.release(port)
            raise
        try:
            await trio.to_thread.run_sync(self._install_version, spec, message.staged_dir)
        except BaseException:
            self.ctx.store.delete_formation(spec.id)
            self.ports.release(port)
            raise
        log.info("%s: created version %s on port %s", spec.id, spec.version, port)
        ref = await self._start_actor(spec.id, port, Kept())
        assert self.nursery is not None
        self.nursery.start_soon(self._first_start, spec.id, spec.version, ref, reply)
        return DEFERRED

    def _install_version(self, spec: FormationSpec, staged_dir: Path) -> Path:
        version_dir = self.ctx.home.version_dir(spec.id, spec.version)
        if version_dir.parent.parent.exists():
            # The store row was created just now and no other row names this id, so this is
            # a folder left by a crash before an earlier deploy's row was written (or after
            # a delete's row went): nothing refers to it.
            shutil.rmtree(version_dir.parent.parent)
        version_dir.parent.mkdir(parents=True, mode=0o700)
        staged_dir.rename(version_dir)
        failed_deploys.clear(self.ctx.home.failed_deploy_logs(spec.id))  # a new attempt
        return version_dir

    async def _first_start(
        self, formation_id: str, version: str, ref: ActorRef, reply: Reply | None
    ) -> None:
        """Forward the first start's progress to the deployer; undo the deploy if it fails
        (its logs are kept: `fleet_entries.remove_files`)."""
        began = trio.current_time()
        result, error = await relay_start(ref, reply)
        if not (error is not None and self._shutting_down):
            self.ctx.metrics.deploy_ended(error is None, trio.current_time() - began)
        if error is not None:
            self._first_start_failed(formation_id, version, reply, error)
            return
        self._announce(
            "formation_deployed",
            {
                "formation_id": formation_id,
                "version": result.get("version"),
                "status": result.get("status"),
                "pid": result.get("pid"),
                "port": result.get("port"),
            },
        )
        if reply is not None:
            reply.resolve(result)

    def _first_start_failed(
        self, formation_id: str, version: str, reply: Reply | None, error: FsupError
    ) -> None:
        if self._shutting_down and formation_id in self.formations:
            # Not a failure of the formation: it stays deployed (desired running), and the
            # next start of fsup starts it.
            log.warning("%s: first start cut short by the shutdown; kept", formation_id)
            if reply is not None:
                reply.fail(error)
            return
        log.warning("%s: first start failed, removing it: %s", formation_id, error)
        entry = self.formations.get(formation_id)
        if entry is None:  # deleted meanwhile
            if reply is not None:
                reply.fail(error)
            return
        entry.failed_start = FailedStart(error, version, now_rfc3339())
        if reply is not None:
            entry.removal_waiters.append((reply, error))
        self._begin_removal(formation_id)

    def _announce(self, type_: str, data: dict[str, Any]) -> None:
        if self.ctx.events is not None:
            self.ctx.events.publish(type_, data)

    # -- delete ----------------------------------------------------------------------------

    def _delete(self, formation_id: str, reply: Reply | None) -> Any:
        """A second delete of a formation being deleted waits for the first and gets the same
        answer: a client that retries a delete (its first call timed out) learns the outcome."""
        entry = self._visible(formation_id)
        entry.delete_asked = True  # its files and logs go, even a failed deploy's
        if reply is not None:
            entry.removal_waiters.append((reply, None))
        self._begin_removal(formation_id)
        return DEFERRED

    def _begin_removal(self, formation_id: str) -> None:
        """Mark the formation as being removed, now, in memory and in the store: from this
        message on no change reaches its actor (a lookup for one is refused), and an fsup
        killed during the removal resumes it on its next start. The stop runs in the
        background; reads still find the formation until it is gone."""
        entry = self.formations[formation_id]
        if entry.removing:
            return
        entry.removing = True
        entry.removal_deadline = trio.current_time() + REMOVE_BOUND_S
        try:
            self.ctx.store.mark_deleting(formation_id)
        except sqlite3.Error as exc:  # the delete goes on; only its resume after a crash is lost
            log.error("%s: cannot record the delete in the store: %s", formation_id, exc)
        assert self.nursery is not None
        self.nursery.start_soon(self._remove, formation_id, entry)

    async def _remove(self, formation_id: str, entry: Entry) -> None:
        answered = False
        with trio.move_on_after(REMOVE_BOUND_S):
            try:
                await entry.ref.ask(Shutdown(keep_desired=False))
                answered = True
            except (FsupError, ActorError) as exc:
                log.warning("%s: shutdown before removal: %s", formation_id, exc)
        await until_ended(formation_id, entry, answered, self.ctx.home.root, self.ctx.kill_strays)
        assert self.ref is not None
        await self.ref.tell(_Removed(formation_id))

    async def _finish_removal(self, formation_id: str) -> None:
        entry = self.formations.pop(formation_id)
        if entry.kept.process is not None and entry.kept.process.alive():
            log.error(
                "%s: process %s outlived its stop; killing it", formation_id, entry.kept.process.pid
            )
            await entry.kept.process.stop(signal.SIGKILL, 0)
        self.ctx.store.delete_formation(formation_id)
        self.ctx.routes.remove(formation_id)
        for port in entry.ports:
            self.ports.release(port)
        failed = None if entry.delete_asked else entry.failed_start
        kept = await trio.to_thread.run_sync(remove_files, self.ctx.home, formation_id, failed)
        log.info("%s: deleted", formation_id)
        # A deploy whose first start failed is removed too; `deployed` says which it was.
        deployed = entry.failed_start is None  # (also when no one waits for the deploy)
        event = {"formation_id": formation_id, "deployed": deployed}
        self._announce(
            "formation_deleted", {**event, **({"resumed": True} if entry.resumed else {})}
        )
        for waiter, error in entry.removal_waiters:
            if error is None:
                waiter.resolve({"id": formation_id, "deleted": True})
            else:
                waiter.fail(kept or error)  # the failed start's error, naming its kept logs

    # -- shutdown --------------------------------------------------------------------------

    def _shutdown_all(self, reply: Reply | None) -> Any:
        self._shutting_down = True
        entries = list(self.formations.items())

        async def stop_all() -> None:
            async with trio.open_nursery() as nursery:
                for formation_id, entry in entries:
                    nursery.start_soon(self._shutdown_one, formation_id, entry.ref)
            if reply is not None:
                reply.resolve({"stopped": [fid for fid, _ in entries]})

        assert self.nursery is not None
        self.nursery.start_soon(stop_all)
        return DEFERRED

    @staticmethod
    async def _shutdown_one(formation_id: str, ref: ActorRef) -> None:
        try:
            await ref.ask(Shutdown(keep_desired=True))
        except (FsupError, ActorError) as exc:
            log.warning("%s: shutdown: %s", formation_id, exc)

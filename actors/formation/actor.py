"""FormationActor: the driver of one formation's machine, the only owner of its processes.

Requests and outcomes arrive through the mailbox one at a time; each goes to
`FormationMachine.handle`, and the effects it returns are carried out here, in order: spawns
(inline: their outcome is fed back at once), watchers, timers and stops (in the actor's
nursery: their outcomes come back through the mailbox), the store, the routes, the replies
and the bus. This file decides nothing about the formation: what happens when is the
machine's; how it happens is here (and in `watchers` and `jobs`).

The live processes (by pid) and their watchers' scopes are kept in a `ProcessRegistry` that
the actor and its `JobRunner` share; the runner is handed that, the stray sweeper, `Kept`, a
`post` into this mailbox and the services it calls (`JobPorts`), never the actor.

What must outlive a crash of the actor itself is kept in `Kept` (owned by the fleet): the live
process handle. A restarted incarnation finds it there and re-attaches instead of spawning a
second process.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, assert_never, get_args

import trio

from supervisor.core.errors import FsupError
from supervisor.core.manifest import FormationSpec, HealthSpec, ProxySpec, StopSpec, parse_manifest
from supervisor.core.timestamps import rfc3339_now
from supervisor.runtime.metrics import MeteredProbe
from supervisor.runtime.routing import Backend
from supervisor.storage import versions
from supervisor.storage.store import VersionRow

from .. import listener
from ..base import DEFERRED, Actor, Reply
from ..health import PortTaken as PortTakenError
from ..health import owned
from ..process import ProcessHandle, StraySweeper
from ..spawn import SpawnError
from . import watchers
from .context import FormationContext, Kept
from .jobs import JobPorts, JobRunner
from .launch import launch_spec
from .machine import effects as fx
from .machine import views
from .machine.formation import FormationMachine
from .machine.lifecycle import Desired, State
from .machine.messages import (
    MACHINE_REQUESTS,
    BeginJob,
    Boot,
    CurrentVersion,
    EnsureRunning,
    Event,
    JobTarget,
    Nodes,
    Requested,
    Rollback,
    SearchTarget,
    Snapshot,
    Spawned,
    SpawnFailed,
    StopFinished,
    TimerFired,
    Update,
)
from .processes import ProcessRegistry
from .watchers import Posted

log = logging.getLogger("fsup.formation")
LOG_LEVELS: dict[fx.LogLevel, int] = {
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Unique across incarnations: an outcome posted by an earlier incarnation is stale.
_generations = itertools.count(1)
_requests = itertools.count(1)

INTERNAL = get_args(Posted)  # what the driver's own tasks post back

# The effects by family, each carried out in one place below (jobs: `JobRunner`).
OperationEffect = fx.Answer | fx.Progress | fx.Publish | fx.Log | fx.EndActor
ProcessEffect = (
    fx.Watch
    | fx.Unwatch
    | fx.StopProcess
    | fx.Reap
    | fx.SweepStrays
    | fx.ProbeOnce
    | fx.StartTimer
    | fx.CancelTimer
)
StoreEffect = (
    fx.PersistDesired
    | fx.PersistProcess
    | fx.PersistCurrent
    | fx.PersistVersion
    | fx.PublishRoute
    | fx.WithdrawRoute
    | fx.ExpectRoute
    | fx.MarkRouteHealthy
)


class FormationActor(Actor):
    def __init__(
        self,
        ctx: FormationContext,
        formation_id: str,
        spec: FormationSpec,
        version_dir: Path,
        port: int,
        kept: Kept,
    ) -> None:
        super().__init__()
        self.name = f"formation:{formation_id}"
        self.ctx = ctx
        self.id = formation_id
        self.kept = kept
        self.machine = FormationMachine(
            formation_id,
            spec,
            version_dir,
            port,
            restart_count=kept.restart_count,
            rng=ctx.rng,
            gens=_generations,
        )
        self._replies: dict[int, Reply | None] = {}
        self._jobs_begun: dict[int, tuple[str, float]] = {}  # update/rollback: kind, start
        self.processes = ProcessRegistry()  # by pid: active, staging, retiring
        self._timers: dict[int, trio.CancelScope] = {}  # by gen
        self._stopping: dict[int, int | None] = {}  # stop gen -> pid
        self._strays = StraySweeper(ctx.home.root, formation_id, kept, ctx.kill_strays)
        self._proxy: ProxySpec | None = None  # the settings last given to the route
        self._launch_spec = partial(launch_spec, ctx.home, ctx.server_url, formation_id)
        self.jobs = JobRunner(
            JobPorts(
                formation_id=formation_id,
                post=self.post,
                store=ctx.store,
                launcher=ctx.launcher,
                listeners=ctx.listeners,
                fleet=ctx.fleet,  # set by the fleet before it makes any formation actor
                processes=self.processes,
                strays=self._strays,
                kept=kept,
                launch_spec=self._launch_spec,
                serving_version=self._serving_version,
                log_dir=ctx.home.formation_logs(formation_id),
            )
        )

    # -- what the rest of the actor package reads -------------------------------------------

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def spec(self) -> FormationSpec:
        return self.machine.spec

    def result(self, status: str) -> dict[str, Any]:
        return self.machine.result(status)

    def snapshot(self) -> dict[str, Any]:
        process = self.kept.process
        uptime = round(max(0.0, time.time() - process.started_at), 3) if process else None
        stored = [v.version for v in self.ctx.store.versions(self.id)]
        return views.snapshot(self.machine, self.ctx.store.formation(self.id), stored, uptime)

    # -- the mailbox -------------------------------------------------------------------------

    async def on_start(self) -> None:
        row = self.ctx.store.formation(self.id)
        process = self.kept.process
        adopted = process if process is not None and process.alive() else None
        if adopted is not None:
            self.processes.add(adopted)
        desired = Desired(row.desired) if row else Desired.RUNNING
        await self._feed(Boot(desired, adopted.pid if adopted is not None else None))

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        match message:
            case Snapshot():
                return self.snapshot()
            case CurrentVersion():
                return self.machine.spec.version, self.machine.version_dir
            case Nodes():
                return views.nodes(self.machine, self._health_check_age())
            case SearchTarget():
                return views.search_target(self.machine, self.ctx.home.formation_logs(self.id))
            case EnsureRunning() if self.ctx.store.formation(self.id) is None:
                return False
            case Update(staged_dir=staged, spec=spec, manifest=manifest):
                target = JobTarget(
                    "update",
                    spec,
                    self.ctx.home.version_dir(self.id, spec.version),
                    manifest,
                    staged,
                )
                return await self._request(reply, lambda rid: BeginJob(rid, target), "update")
            case Rollback():
                target = self._rollback_target()
                return await self._request(reply, lambda rid: BeginJob(rid, target), "rollback")
            case _ if isinstance(message, MACHINE_REQUESTS):
                return await self._request(reply, lambda rid: Requested(rid, message))
            case _ if isinstance(message, INTERNAL):
                try:
                    await self._feed(message)
                finally:  # after: a stop's process is forgotten by the machine by then
                    self._note_outcome(message)
                return None
        raise FsupError("INVALID_REQUEST", f"unknown message {type(message).__name__}")

    async def _request(
        self,
        reply: Reply | None,
        event: Callable[[int], BeginJob | Requested],
        job: str | None = None,
    ) -> object:
        """Number the request and feed it; an update or rollback (`job`) is timed until its
        answer, for `/metrics`."""
        rid = next(_requests)
        self._replies[rid] = reply
        if job is not None:
            self._jobs_begun[rid] = (job, trio.current_time())
        await self._feed(event(rid))
        return DEFERRED

    def _rollback_target(self) -> JobTarget:
        stored = {row.version: row for row in self.ctx.store.versions(self.id)}
        target = versions.previous(list(stored), self.machine.spec.version)
        if target is None:
            raise FsupError(
                "NO_PREVIOUS_VERSION",
                f"formation '{self.id}' has no version below {self.machine.spec.version} to "
                "roll back to",
                {"versions": list(stored)},  # the store lists them in SemVer order
            )
        row = stored[target]
        spec = parse_manifest(row.manifest, self.ctx.restart_defaults)
        return JobTarget("rollback", spec, Path(row.path), None, None)

    def _note_outcome(self, message: Posted) -> None:
        if isinstance(message, StopFinished):
            pid = self._stopping.pop(message.gen, None)
            if pid is not None and pid != self.machine.pid:
                self.processes.pop(pid)
        elif isinstance(message, TimerFired):
            self._timers.pop(message.gen, None)

    async def post(self, event: Posted) -> None:
        assert self.ref is not None
        await self.ref.tell(event)

    # -- carrying out effects ----------------------------------------------------------------

    async def _feed(self, event: Event) -> None:
        """Hand `event` to the machine and carry out what it asks, in order. An effect with
        an immediate outcome (a spawn) feeds that outcome back before the next effect."""
        for effect in self.machine.handle(event, trio.current_time()):
            outcome = await self._do(effect)
            if outcome is not None:
                await self._feed(outcome)
        proxy = self.machine.spec.proxy
        if proxy != self._proxy:  # a new version may bring other proxy settings
            self.ctx.routes.configure(self.id, proxy.hold, proxy.idempotent)
            self._proxy = proxy
        self.kept.restart_count = self.machine.restart_count
        pid = self.machine.pid
        self.kept.process = self.processes.get(pid)

    async def _do(self, effect: fx.Effect) -> Spawned | SpawnFailed | None:
        """Carry out one effect, in the place of its family; one no family takes is a bug,
        caught by the type check (`assert_never`) and, at run time, by an AssertionError."""
        assert self.nursery is not None
        match effect:
            case fx.Spawn():
                return await self._spawn(effect)
            case fx.Answer() | fx.Progress() | fx.Publish() | fx.Log() | fx.EndActor():
                self._do_operation(effect)
            case (
                fx.Watch()
                | fx.Unwatch()
                | fx.StopProcess()
                | fx.Reap()
                | fx.SweepStrays()
                | fx.ProbeOnce()
                | fx.StartTimer()
                | fx.CancelTimer()
            ):
                self._do_process(effect, self.nursery)
            case (
                fx.PersistDesired()
                | fx.PersistProcess()
                | fx.PersistCurrent()
                | fx.PersistVersion()
                | fx.PublishRoute()
                | fx.WithdrawRoute()
                | fx.ExpectRoute()
                | fx.MarkRouteHealthy()
            ):
                self._do_store(effect)
            case fx.PrepareJob() | fx.Promote() | fx.RetireOld() | fx.CleanUpJob():
                self.jobs.do(effect, self.nursery)
            case _:
                assert_never(effect)
        return None

    def _do_operation(self, effect: OperationEffect) -> None:
        match effect:
            case fx.Answer(rid=rid, value=value, error=error):
                self._answer(rid, value, error)
            case fx.Progress(rid=rid, event=event):
                reply = self._replies.get(rid)
                if reply is not None:
                    reply.emit(event)
            case fx.Publish(type=type_, data=data):
                self.ctx.metrics.published(self.id, type_, data)  # a restart, by reason
                if self.ctx.events is not None:
                    self.ctx.events.publish(type_, data)
            case fx.Log(level=level, message=message):
                log.log(LOG_LEVELS[level], "%s: %s", self.id, message)
            case fx.EndActor():
                self.stop_after_this_message()
            case _:
                assert_never(effect)

    def _answer(self, rid: int, value: Any, error: FsupError | None) -> None:
        begun = self._jobs_begun.pop(rid, None)
        if begun is not None:
            job, started = begun
            tally = self.ctx.metrics.formation(self.id)
            tally.job_ended(job, error is None, trio.current_time() - started)
        reply = self._replies.pop(rid, None)
        if reply is None:
            if error is not None:
                log.warning("%s: %s (no one asked)", self.id, error.message)
        elif error is not None:
            reply.fail(error)
        else:
            reply.resolve(value)

    def _do_process(self, effect: ProcessEffect, nursery: trio.Nursery) -> None:
        match effect:
            case fx.Watch():
                self._watch(effect, nursery)
            case fx.Unwatch(pid=pid):
                self.processes.unwatch(pid)
            case fx.StopProcess(gen=gen, pid=pid, stop=stop):
                self._stopping[gen] = pid
                nursery.start_soon(self._stop, gen, self.processes.get(pid), stop)
            case fx.Reap(pid=pid):
                process = self.processes.pop(pid)
                if process is not None:
                    process.kill_group()  # leftovers of its group must not hold the port
                    self._strays.start(nursery)  # ...nor what left it (StraySweeper)
            case fx.SweepStrays():
                self._strays.start(nursery)
            case fx.ProbeOnce(gen=gen, pid=pid, health=health, port=port):
                probe = self._probe(health, pid)
                taken = partial(self._port_taken, False)
                nursery.start_soon(watchers.probe_once, self.post, gen, probe, port, taken)
            case fx.StartTimer(gen=gen, delay=delay):
                restarts = self.machine.restart_count  # what a held request is told
                self.ctx.routes.backoff(self.id, trio.current_time() + delay, restarts)
                self._timers[gen] = scope = trio.CancelScope()
                nursery.start_soon(self._timer, scope, gen, delay)
            case fx.CancelTimer(gen=gen):
                timer = self._timers.pop(gen, None)
                if timer is not None:
                    timer.cancel(reason="backoff superseded")
            case _:
                assert_never(effect)

    def _do_store(self, effect: StoreEffect) -> None:
        store, routes = self.ctx.store, self.ctx.routes
        match effect:
            case fx.PersistDesired(desired=desired):
                row = store.formation(self.id)
                if row is not None and row.desired != desired:
                    store.set_desired(self.id, desired)
            case fx.PersistProcess(pid=pid, started_at=started_at):
                store.set_process(self.id, pid, started_at)
            case fx.PersistCurrent(version=version, port=port, pid=pid, started_at=started_at):
                store.set_current(self.id, version, port, pid, started_at)
            case fx.PersistVersion(spec=spec, manifest=manifest, version_dir=version_dir):
                added = VersionRow(self.id, spec.version, manifest, str(version_dir), rfc3339_now())
                store.put_version(added)
            case fx.PublishRoute(port=port, pid=pid, version=version):
                # The route it replaces is drained by the swap's `RetireOld` (jobs).
                self.jobs.route_replaced(routes.publish(self.id, Backend(port, pid, version)))
            case fx.WithdrawRoute():
                routes.publish(self.id, None)
            case fx.ExpectRoute(coming_back=coming_back):
                routes.expect(self.id, coming_back)
            case fx.MarkRouteHealthy(interval=interval):
                route = routes.get(self.id)
                if route is not None:
                    route.last_healthy_at = trio.current_time()
                    route.interval = interval
            case _:
                assert_never(effect)

    # -- processes ---------------------------------------------------------------------------

    async def _spawn(self, effect: fx.Spawn) -> Spawned | SpawnFailed:
        try:
            await listener.ensure_port_free(self.ctx.listeners, self.id, effect.port)
            with self._strays.spawning():
                process = await self.ctx.launcher.spawn(
                    self._launch_spec(effect.spec, effect.version_dir, effect.port)
                )
        except (SpawnError, FsupError) as exc:
            return SpawnFailed(effect.gen, str(exc), exc if isinstance(exc, FsupError) else None)
        self.processes.add(process)
        self.kept.process = process  # owned before the next checkpoint (StraySweeper)
        return Spawned(effect.gen, process.pid, process.started_at)

    def _watch(self, effect: fx.Watch, nursery: trio.Nursery) -> None:
        """Watch a process's exit and health in the background, in its own cancel scope."""
        process, scope = self.processes.watch(effect.pid)
        health = effect.health
        probe = self._probe(health, effect.pid)
        taken = partial(self._port_taken, effect.staging)

        async def attend() -> None:
            with scope:
                async with trio.open_nursery() as both:
                    both.start_soon(watchers.watch_exit, self.post, effect.gen, process)
                    both.start_soon(
                        watchers.watch_health,
                        self.post,
                        effect.gen,
                        effect.gate,
                        health,
                        effect.port,
                        probe,
                        process,
                        taken,
                    )

        nursery.start_soon(attend)

    def _probe(self, health: HealthSpec, pid: int) -> MeteredProbe:
        """The probe for `pid`, checking that the port is its own, each check counted."""
        probe = owned(self.ctx.probe_for(health), health, self.ctx.listeners, pid)
        return MeteredProbe(probe, self.ctx.metrics.formation(self.id))

    def _serving_version(self) -> str:
        return self.machine.spec.version

    def _port_taken(self, staging: bool, exc: PortTakenError) -> FsupError:
        serving = self.machine.spec.version if staging else None
        return listener.port_in_use(self.id, exc.port, exc.holders, "health_check", serving)

    async def _stop(self, gen: int, process: ProcessHandle | None, stop: StopSpec) -> None:
        returncode = None
        if process is not None:
            returncode = await process.stop(stop.signum, stop.timeout)
        await self.post(StopFinished(gen, returncode))

    async def _timer(self, scope: trio.CancelScope, gen: int, delay: float) -> None:
        with scope:
            await watchers.fire_after(self.post, gen, delay)

    def _health_check_age(self) -> float | None:
        route = self.ctx.routes.get(self.id)
        checked = route.last_healthy_at if route is not None else None
        return round(trio.current_time() - checked, 3) if checked is not None else None

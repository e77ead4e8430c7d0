"""FormationActor: one per formation, the only owner of its process.

The actor is an event-driven state machine. Requests (start, stop, restart, snapshot, shutdown)
and internal events (the process exited, a health result, a backoff elapsed, a stop finished)
all arrive through the mailbox and are handled one at a time, so state changes are serialized.
The waiting itself happens in background tasks in the actor's nursery, which only post events
back; this keeps the mailbox open during a 60 s health check, so a `stop` or `delete` sent then
interrupts it at once.

Lifecycle requests are answered when their outcome is known (a start when the process is
healthy or has failed), with progress events on the way (`spawning`, `health_check` countdown).

Each spawned process gets a fresh generation number; events carry it and stale ones (from a
process already replaced, or from a previous incarnation of this actor) are ignored.

What must outlive a crash of the actor itself is kept in `Kept` (owned by the fleet): the live
process handle. A restarted incarnation finds it there and re-attaches instead of spawning a
second process.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import trio
from packaging.version import Version

from supervisor import versions
from supervisor.errors import FsupError
from supervisor.formation_logs import LogLimits
from supervisor.home import Home
from supervisor.manifest import FormationSpec, HealthSpec, RestartSpec, StopSpec, parse_manifest
from supervisor.routing import Backend, RouteTable
from supervisor.store import Store, VersionRow

from . import listener
from .base import DEFERRED, Actor, ActorError, ActorRef, Reply
from .health import PortTaken, Probe, owned
from .lifecycle import State, check_transition
from .listener import Holder, ListenerCheck, ProcListeners, port_in_use
from .port_requests import ReleasePort
from .process import HOME_ENV, Launcher, LaunchSpec, ProcessHandle, SpawnError, StraySweeper
from .restart_policy import RestartTracker

log = logging.getLogger("fsup.formation")

_generations = itertools.count(1)


# -- requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Start the process (deploy uses it too). Answered once healthy."""


@dataclass(frozen=True)
class Stop:
    """Stop the process; desired state becomes stopped. Answered once stopped."""


@dataclass(frozen=True)
class Restart:
    """Stop (if running) then start. Answered once healthy again."""


@dataclass(frozen=True)
class Snapshot:
    """The formation as the API shows it."""


@dataclass(frozen=True)
class CurrentVersion:
    """The current version and its folder (for a download)."""


@dataclass(frozen=True)
class SearchTarget:
    """What a search may read of this formation: its logs and, when running, its port."""


@dataclass(frozen=True)
class Nodes:
    """This formation's processes as nodes: the active one, and a staging one mid-update."""


@dataclass(frozen=True)
class ProbeNow:
    """Health-check the running process now (a routing refresh)."""


@dataclass(frozen=True)
class EnsureRunning:
    """Reconcile: start the formation if it is meant to run but has no process."""


@dataclass(frozen=True)
class Shutdown:
    """Stop the process without touching the desired state, then end the actor. The fleet
    sends it when fsup stops (`keep_desired`) and before a delete."""

    keep_desired: bool = True


@dataclass(frozen=True)
class Update:
    """Replace the running version with a staged, validated bundle, blue-green."""

    staged_dir: Path
    spec: FormationSpec
    manifest: bytes


@dataclass(frozen=True)
class Rollback:
    """Blue-green back to the version below the current one."""


@dataclass(frozen=True)
class CancelUpdate:
    """Abort an update or rollback that has not swapped yet."""


# -- internal events (posted by the actor's own background tasks) --------------------------


@dataclass(frozen=True)
class _Exited:
    gen: int
    returncode: int | None


@dataclass(frozen=True)
class _GateProgress:
    gen: int
    attempt: int
    max_attempts: int
    remaining_s: float
    last_error: str | None


@dataclass(frozen=True)
class _GatePassed:
    gen: int


@dataclass(frozen=True)
class _GateFailed:
    gen: int
    error: str


@dataclass(frozen=True)
class _ProbeResult:
    gen: int
    error: str | None


@dataclass(frozen=True)
class _PortTaken:
    """A probe succeeded, but a process outside the formation listens on its port."""

    gen: int
    port: int
    holders: tuple[Holder, ...]


@dataclass(frozen=True)
class _BackoffElapsed:
    gen: int


@dataclass(frozen=True)
class _StopFinished:
    gen: int
    returncode: int | None


@dataclass(frozen=True)
class _JobStaged:
    job: int
    process: ProcessHandle | None  # None: nothing to run (the formation is not running)
    port: int | None


@dataclass(frozen=True)
class _JobFailed:
    job: int
    error: FsupError


@dataclass(frozen=True)
class _JobCleaned:
    job: int


@dataclass(frozen=True)
class _OldRetired:
    job: int


@dataclass
class _Job:
    """An update or rollback in flight: its own process, port and generation until the swap."""

    id: int
    kind: str  # "update" | "rollback"
    spec: FormationSpec
    version_dir: Path
    manifest: bytes | None  # an update's formation.yaml, stored at the swap
    previous_version: str
    waiters: list[Reply] = field(default_factory=list)
    cancel_waiters: list[Reply] = field(default_factory=list)
    gen: int = 0
    port: int | None = None
    process: ProcessHandle | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)  # the preparation
    watch_scope: trio.CancelScope | None = None  # the staging process's watchers
    prep_done: trio.Event = field(default_factory=trio.Event)
    swapped: bool = False
    failure: FsupError | None = None


class _After(Enum):
    """What follows once the process being stopped is gone."""

    STOPPED = "stopped"  # an operator stop
    START = "start"  # a restart request
    FAILURE = "failure"  # it was unhealthy: apply the restart policy
    CRASHED = "crashed"  # a requested start failed its health check
    EXIT = "exit"  # shutdown or delete: end the actor


# -- shared context -----------------------------------------------------------------------


class EventSink(Protocol):
    """Where formation events go: the event bus, or a test's recorder. Never blocks."""

    def publish(self, type_: str, data: dict[str, Any], search_id: str | None = None) -> Any: ...


@dataclass
class Kept:
    """State that outlives an actor incarnation (the fleet holds it per formation)."""

    process: ProcessHandle | None = None
    restart_count: int = 0
    # Staging and retiring processes of an update: owned too, never strays.
    extra_pids: set[int] = field(default_factory=set)


@dataclass
class FormationContext:
    """Services the fleet hands every formation actor."""

    home: Home
    store: Store
    launcher: Launcher
    probe_for: Callable[[HealthSpec], Probe]
    server_url: str
    rng: random.Random = field(default_factory=random.Random)
    routes: RouteTable = field(default_factory=RouteTable)
    # The fleet, for ports beyond the first (set by the fleet when it starts).
    fleet: ActorRef | None = None
    restart_defaults: RestartSpec = field(default_factory=RestartSpec)
    log_limits: LogLimits = field(default_factory=LogLimits)
    listeners: ListenerCheck = field(default_factory=ProcListeners)
    # Kills what outlived an exited process outside its group (None: `process.kill_strays`).
    kill_strays: Callable[[Path, str | None, frozenset[int], Callable[[], bool]], int] | None = None
    # The event bus (`supervisor.events.EventBus`); None in unit tests that do not listen.
    events: EventSink | None = None


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        self.spec = spec
        self.version_dir = version_dir
        self.port = port
        self.kept = kept
        self.state = State.STOPPED
        self.healthy: bool | None = None
        self.last_error: str | None = None
        self.last_exit_code: int | None = None
        self._tracker = RestartTracker(spec.restart, ctx.rng)
        self._gen = 0
        self._process_scope: trio.CancelScope | None = None
        self._healthy_since: float | None = None
        self._unhealthy_since: float | None = None
        self._requested_start = False  # the current start has an operator waiting on it
        self._start_waiters: list[Reply] = []
        self._stop_waiters: list[Reply] = []
        self._after_stop: _After = _After.STOPPED
        self._stop_reason = "stop"
        self._failure_reason = ""
        self._pending_failure: FsupError | None = None
        self._backoff_scope: trio.CancelScope | None = None
        self._job: _Job | None = None
        self._exit_after_job = False
        self._strays = StraySweeper(ctx.home.root, formation_id, kept, ctx.kill_strays)

    # -- life of the actor ---------------------------------------------------------------

    async def on_start(self) -> None:
        row = self.ctx.store.formation(self.id)
        desired = row.desired if row else "running"
        process = self.kept.process
        if process is not None and process.alive():
            log.info("%s: re-attaching to running pid %s", self.id, process.pid)
            self._attach(process, gate=False)
            self._set_state(State.RUNNING, "adopted")
            self._publish()
            if desired == "stopped":
                self._begin_stop(_After.STOPPED, "stop")
        elif desired == "running":
            await self._spawn(requested=False, reason="restored")

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        match message:
            case Snapshot():
                return self.snapshot()
            case CurrentVersion():
                return self.spec.version, self.version_dir
            case Nodes():
                return self._nodes()
            case ProbeNow():
                return self._probe_now()
            case EnsureRunning():
                row = self.ctx.store.formation(self.id)
                if row is None or row.desired != "running":
                    return False
                if self.state not in (State.STOPPED, State.CRASHED):
                    return False
                self._tracker.reset()
                await self._spawn(requested=False, reason="reconcile")
                return True
            case SearchTarget():
                serving = self.state is State.RUNNING and self.kept.process is not None
                return {
                    "formation_id": self.id,
                    "port": self.port if serving else None,
                    "search_path": self.spec.search.path if self.spec.search else None,
                    "log_dir": self.ctx.home.formation_logs(self.id),
                }
            case Start():
                return await self._on_start_request(reply)
            case Stop():
                return self._on_stop_request(reply)
            case Restart():
                return await self._on_restart_request(reply)
            case Shutdown(keep_desired=keep):
                return self._on_shutdown(reply, keep)
            case Update():
                return self._on_update(message, reply)
            case Rollback():
                return self._on_rollback(reply)
            case CancelUpdate():
                return self._on_cancel_update(reply)
            case _Exited() | _GatePassed() | _GateFailed() | _GateProgress() | _ProbeResult() | _PortTaken():
                job = self._job
                if message.gen == self._gen:
                    await self._on_process_event(message)
                elif job is not None and message.gen == job.gen and not job.swapped:
                    self._on_staging_event(job, message)
                return None
            case _JobStaged() | _JobFailed() | _JobCleaned() | _OldRetired():
                if self._job is not None and message.job == self._job.id:
                    self._on_job_event(self._job, message)
                return None
            case _BackoffElapsed(gen=gen) if gen == self._gen and self.state is State.RESTARTING:
                await self._spawn(requested=False, reason="backoff_elapsed")
                return None
            case _StopFinished(gen=gen) if gen == self._gen:
                await self._on_stop_finished(message)
                return None
            case _BackoffElapsed() | _StopFinished():
                return None
        raise FsupError("INVALID_REQUEST", f"unknown message {type(message).__name__}")

    # -- requests -------------------------------------------------------------------------

    async def _on_start_request(self, reply: Reply | None) -> Any:
        if self.state in (State.RUNNING,):
            raise FsupError(
                "FORMATION_ALREADY_RUNNING",
                f"formation '{self.id}' is already running; use restart to restart it",
            )
        if self.state is State.STOPPING:
            raise FsupError(
                "FORMATION_ALREADY_RUNNING",
                f"formation '{self.id}' is stopping; start it again once it has stopped",
            )
        self._set_desired("running")
        if reply is not None:
            self._start_waiters.append(reply)
        if self.state is State.STARTING:
            self._requested_start = True
            return DEFERRED
        self._tracker.reset()
        self.kept.restart_count = 0
        self._cancel_backoff()
        await self._spawn(requested=True, reason="start")
        return DEFERRED

    def _on_stop_request(self, reply: Reply | None) -> Any:
        if self.state in (State.STOPPED,):
            raise FsupError(
                "FORMATION_NOT_RUNNING", f"formation '{self.id}' is not running (stopped)"
            )
        self._set_desired("stopped")
        self._fail_start_waiters("stop")
        if self.state in (State.CRASHED, State.RESTARTING):
            self._cancel_backoff()
            self._set_state(State.STOPPED, "stop")
            return self.result("stopped")
        if reply is not None:
            self._stop_waiters.append(reply)
        if self.state is not State.STOPPING:
            self._begin_stop(_After.STOPPED, "stop")
        else:
            self._after_stop, self._stop_reason = _After.STOPPED, "stop"
        return DEFERRED

    async def _on_restart_request(self, reply: Reply | None) -> Any:
        self._set_desired("running")
        if reply is not None:
            self._start_waiters.append(reply)
        self._tracker.reset()
        self.kept.restart_count = 0
        if self.state in (State.RUNNING, State.STARTING):
            if reply is not None:
                reply.emit({"stage": "stopping", "message": f"Stopping pid {self._pid()}"})
            self._begin_stop(_After.START, "restart")
        elif self.state is State.STOPPING:
            self._after_stop, self._stop_reason = _After.START, "restart"
        else:
            self._cancel_backoff()
            await self._spawn(requested=True, reason="restart")
        return DEFERRED

    def _on_shutdown(self, reply: Reply | None, keep_desired: bool) -> Any:
        self._fail_start_waiters("shutdown" if keep_desired else "delete")
        self._cancel_backoff()
        if not keep_desired:
            self._set_desired("stopped")
        if self.kept.process is None:
            self._abort_job(self._interrupted("a shutdown"))
            if self._job is not None:
                if reply is not None:
                    self._stop_waiters.append(reply)
                self._exit_after_job = True
                return DEFERRED
            self.stop_after_this_message()
            return self.result(self.state.value)
        if reply is not None:
            self._stop_waiters.append(reply)
        why = "shutdown" if keep_desired else "delete"
        if self.state is not State.STOPPING:
            self._begin_stop(_After.EXIT, why)
        else:
            self._after_stop, self._stop_reason = _After.EXIT, why
        return DEFERRED

    # -- spawning and attending a process ---------------------------------------------------

    async def _spawn(self, requested: bool, reason: str) -> None:
        self._requested_start = requested
        self._set_state(State.STARTING, reason)
        self._emit_start({"stage": "spawning", "message": f"Starting {' '.join(self.spec.command)}"})
        try:
            await listener.ensure_port_free(self.ctx.listeners, self.id, self.port)
            with self._strays.spawning():
                process = await self.ctx.launcher.spawn(
                    self._launch_spec(self.spec, self.version_dir, self.port)
                )
        except (SpawnError, FsupError) as exc:
            self.kept.process = None
            failure = exc if isinstance(exc, FsupError) else None
            self._on_start_failure(str(exc), returncode=None, failure=failure)
            return
        self.kept.process = process
        self.ctx.store.set_process(self.id, process.pid, process.started_at)
        log.info("%s: started pid %s on port %s", self.id, process.pid, self.port)
        self._attach(process, gate=True)

    def _launch_spec(self, spec: FormationSpec, version_dir: Path, port: int) -> LaunchSpec:
        env = dict(os.environ)
        env.update(spec.env)
        env.update(
            PORT=str(port),
            HOST="127.0.0.1",
            FORMATION_ID=self.id,
            FORMATION_VERSION=spec.version,
            MUXI_SERVER_URL=self.ctx.server_url,
        )
        env[HOME_ENV] = str(self.ctx.home.root)
        logs = self.ctx.home.formation_logs(self.id)
        argv = list(spec.command)
        if "/" in argv[0] and not os.path.isabs(argv[0]):
            argv[0] = str(version_dir / argv[0])
        return LaunchSpec(
            argv=tuple(argv),
            cwd=version_dir,
            env=env,
            stdout=logs / "stdout.log",
            stderr=logs / "stderr.log",
        )

    def _attach(self, process: ProcessHandle, gate: bool) -> None:
        """Watch a process (new or re-attached) in its own cancel scope."""
        self._gen = next(_generations)
        self._healthy_since = None
        self._unhealthy_since = None
        self.healthy = None
        self._process_scope = self._watch(self._gen, process, gate, self.spec.health, self.port)

    def _watch(
        self, gen: int, process: ProcessHandle, gate: bool, health: HealthSpec, port: int
    ) -> trio.CancelScope:
        """Watch a process's exit and health in the background; events carry `gen`."""
        scope = trio.CancelScope()

        async def attend() -> None:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_exit, gen, process)
                    nursery.start_soon(self._watch_health, gen, gate, health, port, process.pid)

        assert self.nursery is not None
        self.nursery.start_soon(attend)
        return scope

    async def _watch_exit(self, gen: int, process: ProcessHandle) -> None:
        returncode = await process.wait()
        await self._post(_Exited(gen, returncode))

    async def _watch_health(
        self, gen: int, gate: bool, health: HealthSpec, port: int, pid: int
    ) -> None:
        probe = owned(self.ctx.probe_for(health), health, self.ctx.listeners, pid)
        try:
            if gate and not await self._gate(gen, health, probe, port):
                return
            # Keep checking, even with no probe declared (then being alive is being healthy):
            # the routing summary tells stale routes by the age of their last good check.
            while True:
                await trio.sleep(health.interval)
                await self._post(_ProbeResult(gen, await probe.check(port)))
        except PortTaken as exc:
            await self._post(_PortTaken(gen, exc.port, exc.holders))

    async def _gate(self, gen: int, health: HealthSpec, probe: Probe, port: int) -> bool:
        """Wait until the new process is healthy; report a countdown on the way."""
        if health.kind == "process":
            await self._post(_GateProgress(gen, 1, 1, health.stay_up, None))
            await trio.sleep(health.stay_up)
            await self._post(_GatePassed(gen))
            return True
        deadline = trio.current_time() + health.timeout
        max_attempts = max(1, int(health.timeout / health.interval) + 1)
        error: str | None = None
        for attempt in range(1, max_attempts + 1):
            remaining = max(0.0, deadline - trio.current_time())
            await self._post(_GateProgress(gen, attempt, max_attempts, round(remaining, 2), error))
            with trio.move_on_at(deadline):
                error = await probe.check(port)
                if error is None:
                    await self._post(_GatePassed(gen))
                    return True
            if trio.current_time() >= deadline:
                break
            await trio.sleep_until(min(deadline, trio.current_time() + health.interval))
        await self._post(
            _GateFailed(gen, f"not healthy after {health.timeout:g}s (last error: {error})")
        )
        return False

    async def _post(self, event: Any) -> None:
        assert self.ref is not None
        await self.ref.tell(event)

    # -- process events --------------------------------------------------------------------

    async def _on_process_event(self, event: Any) -> None:
        match event:
            case _GateProgress():
                self._emit_start(self._health_event(event, self.spec.health))
            case _GatePassed() if self.state is State.STARTING:
                self._mark_healthy()
                self._set_state(State.RUNNING, "healthy")
                self._publish()
                self.last_error = None
                result = self.result("running")
                for waiter in self._take(self._start_waiters):
                    waiter.resolve(result)
            case _GateFailed() if self.state is State.STARTING:
                self._on_start_failure(event.error, returncode=None, still_running=True)
            case _ProbeResult() if self.state is State.RUNNING:
                self._on_probe(event.error)
            case _PortTaken(port=port, holders=holders) if self.state in (State.STARTING, State.RUNNING):
                self._on_port_taken(port_in_use(self.id, port, holders, "health_check"))
            case _Exited():
                self._on_exit(event.returncode)

    @staticmethod
    def _health_event(event: _GateProgress, health: HealthSpec) -> dict[str, Any]:
        return {
            "stage": "health_check",
            "message": f"Health check {event.attempt}/{event.max_attempts} ({health.kind}), "
            f"{event.remaining_s:g}s left",
            "attempt": event.attempt,
            "max_attempts": event.max_attempts,
            "remaining_s": event.remaining_s,
            **({"last_error": event.last_error} if event.last_error else {}),
        }

    def _on_probe(self, error: str | None) -> None:
        now = trio.current_time()
        if error is None:
            self._mark_healthy()
            self._tracker.healthy_since(self._healthy_since, now)
            return
        if self.healthy is not False:
            log.warning("%s: health check failed: %s", self.id, error)
        self._set_healthy(False, error)
        self._healthy_since = None
        self.last_error = error
        if self._unhealthy_since is None:
            self._unhealthy_since = now
        elif now - self._unhealthy_since >= self.spec.health.timeout:
            self._failure_reason = f"unhealthy for {self.spec.health.timeout:g}s: {error}"
            self._begin_stop(_After.FAILURE, "unhealthy")

    def _on_port_taken(self, error: FsupError) -> None:
        """A stranger answers on our port: this process cannot serve there, starting or not.
        Stopping it withdraws the route at once; the restart that may follow checks the port
        before it spawns."""
        if self.state is State.STARTING:
            self._on_start_failure(error.message, returncode=None, still_running=True, failure=error)
            return
        log.warning("%s: %s", self.id, error.message)
        self._set_healthy(False, error.message)
        self.last_error = self._failure_reason = error.message
        self._begin_stop(_After.FAILURE, "port_taken")

    def _publish(self) -> None:
        """Route proxied requests to the running process."""
        process = self.kept.process
        assert process is not None
        self.ctx.routes.publish(self.id, Backend(self.port, process.pid, self.spec.version))

    def _mark_healthy(self) -> None:
        self._set_healthy(True)
        self._unhealthy_since = None
        route = self.ctx.routes.get(self.id)
        if route is not None:
            route.last_healthy_at = trio.current_time()
            route.interval = self.spec.health.interval
        if self._healthy_since is None:
            self._healthy_since = trio.current_time()

    def _on_exit(self, returncode: int | None) -> None:
        self._abort_job(self._interrupted("the running version exiting"))
        process = self.kept.process
        self._forget_process()
        self.last_exit_code = returncode
        if process is not None:
            process.kill_group()  # leftovers of its group must not hold the port
            self._strays.start(self.nursery)  # ...nor what left it (setsid): see StraySweeper
        described = _describe_exit(returncode)
        tail = process.stderr_tail() if process is not None else ""
        if self.state is State.STARTING:
            self._on_start_failure(f"process {described} before it was healthy", returncode, tail=tail)
        elif self.state is State.RUNNING:
            log.warning("%s: process %s", self.id, described)
            self.last_error = f"process {described}"
            self._apply_restart_policy(returncode, "exited")

    def _on_start_failure(
        self,
        error: str,
        returncode: int | None,
        still_running: bool = False,
        tail: str | None = None,
        failure: FsupError | None = None,
    ) -> None:
        """The start did not reach healthy: the process exited, never answered, or could not
        be spawned. A requested start is reported and the formation is `crashed`; an automatic
        one goes back to the restart policy."""
        self.last_error = error
        process = self.kept.process
        details: dict[str, Any] = {"stage": "health_check", "formation_id": self.id}
        tail = tail if tail is not None else (process.stderr_tail() if process else "")
        if tail:
            details["stderr_tail"] = tail[-STDERR_TAIL_CHARS:]
        if returncode is not None:
            details["exit_code"] = returncode
        self._pending_failure = failure or FsupError(
            "HEALTH_CHECK_FAILED", f"{self.id}: {error}", details
        )
        if still_running:
            self._failure_reason = error
            self._begin_stop(
                _After.CRASHED if self._requested_start else _After.FAILURE, "start_failed"
            )
            return
        if self._requested_start:
            self._crash(error, "start_failed")
        else:
            self._apply_restart_policy(returncode, "start_failed")

    def _apply_restart_policy(self, returncode: int | None, cause: str) -> None:
        """`cause` is why the process is gone (a transition's reason): `exited`, `unhealthy`,
        `port_taken`, `start_failed`."""
        decision = self._tracker.on_exit(returncode, trio.current_time(), self._healthy_since)
        self._healthy_since = None
        if decision.restart:
            self.kept.restart_count += 1
            self._set_state(State.RESTARTING, cause)
            log.info("%s: %s", self.id, decision.reason)
            self._start_backoff(decision.delay)
        elif decision.give_up:
            self._crash(decision.reason, "gave_up")
        else:
            log.info("%s: exited; %s", self.id, decision.reason)
            self._set_desired("stopped")
            self._set_state(State.STOPPED, cause)

    def _crash(self, message: str, reason: str) -> None:
        log.error("%s: crashed: %s", self.id, message)
        self.last_error = message
        self._set_state(State.CRASHED, reason)
        error = self._pending_failure or FsupError(
            "HEALTH_CHECK_FAILED", f"{self.id}: {message}", {"formation_id": self.id}
        )
        for waiter in self._take(self._start_waiters):
            waiter.fail(error)
        self._pending_failure = None

    def _start_backoff(self, delay: float) -> None:
        gen = self._gen = next(_generations)
        scope = trio.CancelScope()
        self._backoff_scope = scope

        async def wait_out() -> None:
            with scope:
                await trio.sleep(delay)
                await self._post(_BackoffElapsed(gen))

        assert self.nursery is not None
        self.nursery.start_soon(wait_out)

    def _cancel_backoff(self) -> None:
        if self._backoff_scope is not None:
            self._backoff_scope.cancel(reason="backoff superseded")
            self._backoff_scope = None

    # -- stopping --------------------------------------------------------------------------

    def _begin_stop(self, after: _After, reason: str) -> None:
        """Stop the current process in the background; `_StopFinished` brings us back.
        `reason` is the transition's: `stop`, `restart`, `shutdown`, `delete`, `unhealthy`,
        `port_taken`, `start_failed`."""
        self._after_stop = after
        self._stop_reason = reason
        self._abort_job(self._interrupted(f"a {after.value} of the running version"))
        process = self.kept.process
        self.ctx.routes.publish(self.id, None)
        if self._process_scope is not None:
            self._process_scope.cancel(reason=f"stopping ({after.value})")
        self._set_state(State.STOPPING, reason)
        gen = self._gen = next(_generations)
        stop = self.spec.stop

        async def stop_process() -> None:
            returncode = None
            if process is not None:
                returncode = await process.stop(stop.signum, stop.timeout)
            await self._post(_StopFinished(gen, returncode))

        assert self.nursery is not None
        self.nursery.start_soon(stop_process)

    async def _on_stop_finished(self, event: _StopFinished) -> None:
        self._forget_process()
        self._strays.start(self.nursery)  # a descendant that left the tree before it was stopped
        self.last_exit_code = event.returncode
        after = self._after_stop
        if after is _After.START:
            await self._spawn(requested=True, reason="restart")
            return
        if after is _After.FAILURE:
            self._apply_restart_policy(event.returncode, self._stop_reason)
            return
        if after is _After.CRASHED:
            self._crash(self._failure_reason, self._stop_reason)
            return
        self._set_state(State.STOPPED, self._stop_reason)
        if after is _After.EXIT and self._job is not None:
            # A staging or retiring process is still being stopped: exit once it is.
            self._exit_after_job = True
            return
        result = self.result("stopped")
        for waiter in self._take(self._stop_waiters):
            waiter.resolve(result)
        if after is _After.EXIT:
            self.stop_after_this_message()

    def _forget_process(self) -> None:
        self.ctx.routes.publish(self.id, None)
        if self._process_scope is not None:
            self._process_scope.cancel(reason="process gone")
            self._process_scope = None
        self.kept.process = None
        self.healthy = None
        self.ctx.store.set_process(self.id, None, None)

    # -- operations ------------------------------------------------------------------------

    def _nodes(self) -> list[dict[str, Any]]:
        route = self.ctx.routes.get(self.id)
        checked = route.last_healthy_at if route is not None else None
        age = round(trio.current_time() - checked, 3) if checked is not None else None
        nodes = []
        if self.kept.process is not None:
            nodes.append({
                "formation_id": self.id, "role": "active", "pid": self.kept.process.pid,
                "port": self.port, "state": self.state.value, "healthy": self.healthy,
                "restart_count": self.kept.restart_count, "last_health_check_age_s": age,
            })
        job = self._job
        if job is not None and job.process is not None and not job.swapped:
            nodes.append({
                "formation_id": self.id, "role": "staging", "pid": job.process.pid,
                "port": job.port, "state": "starting", "healthy": None, "restart_count": 0,
                "last_health_check_age_s": None,
            })
        return nodes

    def _probe_now(self) -> dict[str, Any]:
        if self.state is not State.RUNNING or self.kept.process is None:
            return {"formation_id": self.id, "probing": False}
        gen, port, health = self._gen, self.port, self.spec.health
        probe = owned(self.ctx.probe_for(health), health, self.ctx.listeners, self.kept.process.pid)

        async def probe_once() -> None:
            try:
                await self._post(_ProbeResult(gen, await probe.check(port)))
            except PortTaken as exc:
                await self._post(_PortTaken(gen, exc.port, exc.holders))

        assert self.nursery is not None
        self.nursery.start_soon(probe_once)
        return {"formation_id": self.id, "probing": True}

    # -- updates and rollbacks (blue-green) --------------------------------------------------

    def _on_update(self, message: Update, reply: Reply | None) -> Any:
        spec = message.spec
        if spec.id != self.id:
            raise FsupError(
                "INVALID_FORMATION",
                f"formation.yaml says id {spec.id!r}, but this is formation {self.id!r}",
                {"field": "id"},
            )
        if spec.parsed_version <= self.spec.parsed_version:
            raise FsupError(
                "VERSION_NOT_HIGHER",
                f"version {spec.version} is not higher than the current {self.spec.version}; "
                "bump the version in formation.yaml",
                {"current_version": self.spec.version, "version": spec.version},
            )
        version_dir = self.ctx.home.version_dir(self.id, spec.version)
        return self._begin_job("update", spec, version_dir, message.manifest, message.staged_dir, reply)

    def _on_rollback(self, reply: Reply | None) -> Any:
        stored = {row.version: row for row in self.ctx.store.versions(self.id)}
        target = versions.previous(list(stored), self.spec.version)
        if target is None:
            raise FsupError(
                "NO_PREVIOUS_VERSION",
                f"formation '{self.id}' has no version below {self.spec.version} to roll back to",
                {"versions": sorted(stored, key=Version)},
            )
        row = stored[target]
        spec = parse_manifest(row.manifest, self.ctx.restart_defaults)
        return self._begin_job("rollback", spec, Path(row.path), None, None, reply)

    def _on_cancel_update(self, reply: Reply | None) -> Any:
        job = self._job
        if job is None or job.swapped or job.failure is not None:
            why = "no update in progress" if job is None else "the update can no longer be cancelled"
            return {"formation_id": self.id, "cancelled": False, "message": why}
        if reply is not None:
            job.cancel_waiters.append(reply)
        self._abort_job(
            FsupError(
                "OPERATION_CANCELLED",
                f"the {job.kind} of '{self.id}' to {job.spec.version} was cancelled",
                {"formation_id": self.id, "stage": "health_check"},
            )
        )
        return DEFERRED

    def _begin_job(
        self,
        kind: str,
        spec: FormationSpec,
        version_dir: Path,
        manifest: bytes | None,
        staged: Path | None,
        reply: Reply | None,
    ) -> Any:
        if self._job is not None:
            raise FsupError(
                "UPDATE_IN_PROGRESS",
                f"an {self._job.kind} of '{self.id}' is in progress; wait for it, or "
                f"POST /rpc/formations/{self.id}/cancel-update",
                {"kind": self._job.kind, "version": self._job.spec.version},
            )
        if self.state not in (State.RUNNING, State.STOPPED, State.CRASHED):
            raise FsupError(
                "FORMATION_BUSY",
                f"formation '{self.id}' is {self.state.value}; retry once it is running or stopped",
            )
        job = _Job(next(_generations), kind, spec, version_dir, manifest, self.spec.version)
        if reply is not None:
            job.waiters.append(reply)
        self._job = job
        assert self.nursery is not None
        live = self.state is State.RUNNING
        self.nursery.start_soon(self._prepare_job, job, staged, self.version_dir, live)
        return DEFERRED

    async def _prepare_job(
        self, job: _Job, staged: Path | None, current_dir: Path, live: bool
    ) -> None:
        """Install the version, carry the runtime state over, and (when the formation is
        running) start the new version on a second port. Until `prep_done`, this task alone
        writes `job.port` and `job.process`, so an abort's cleanup finds what it must undo."""
        error: FsupError | None = None
        try:
            with job.scope:
                if staged is not None:
                    await trio.to_thread.run_sync(versions.install, staged, job.version_dir)
                await trio.to_thread.run_sync(
                    versions.carry_runtime_state, current_dir, job.version_dir
                )
                if live:
                    assert self.ctx.fleet is not None
                    job.port = port = await listener.staging_port(
                        self.ctx.fleet, self.ctx.listeners, self.id, self.spec.version
                    )
                    launch = self._launch_spec(job.spec, job.version_dir, port)
                    with self._strays.spawning():
                        job.process = await self.ctx.launcher.spawn(launch)
                    self.kept.extra_pids.add(job.process.pid)
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
            job.prep_done.set()
        # Shielded so an abort cannot lose the news; bounded so a full, unread mailbox (the
        # actor itself ending) cannot hold this task forever.
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            if error is not None:
                await self._post(_JobFailed(job.id, error))
            elif not job.scope.cancelled_caught:
                await self._post(_JobStaged(job.id, job.process, job.port))

    def _on_job_event(self, job: _Job, event: Any) -> None:
        match event:
            case _JobFailed(error=error):
                self._abort_job(error)
            case _JobStaged() if job.failure is None and job.process is None:
                self._switch_offline(job)
            case _JobStaged() if job.failure is None:
                assert job.process is not None and job.port is not None
                job.gen = next(_generations)
                self._emit_job(job, {
                    "stage": "spawning_staging",
                    "message": f"Started {job.spec.version} as pid {job.process.pid} on port "
                    f"{job.port}",
                    "version": job.spec.version, "pid": job.process.pid, "port": job.port,
                })
                job.watch_scope = self._watch(job.gen, job.process, True, job.spec.health, job.port)
            case _JobCleaned():
                self._finish_job(job)
            case _OldRetired():
                result = {**self.result(self.state.value), "previous_version": job.previous_version}
                kind = "formation_updated" if job.kind == "update" else "formation_rolled_back"
                self._announce(kind, {
                    "formation_id": self.id, "version": self.spec.version,
                    "previous_version": job.previous_version, "status": self.state.value,
                    "pid": self._pid(), "port": self.port,
                })
                for waiter in self._take(job.waiters):
                    waiter.resolve(result)
                self._finish_job(job)

    def _on_staging_event(self, job: _Job, event: Any) -> None:
        match event:
            case _GateProgress():
                self._emit_job(job, self._health_event(event, job.spec.health))
            case _GatePassed() if job.failure is None:
                self._swap(job)
            case _GateFailed(error=error):
                self._abort_job(self._staging_failure(job, error, None))
            case _PortTaken(port=port, holders=holders):
                self._abort_job(port_in_use(self.id, port, holders, "health_check", self.spec.version))
            case _Exited(returncode=code):
                self._abort_job(
                    self._staging_failure(job, f"exited before it was healthy ({_describe_exit(code)})", code)
                )

    def _staging_failure(self, job: _Job, error: str, returncode: int | None) -> FsupError:
        details: dict[str, Any] = {"stage": "health_check", "formation_id": self.id,
                                   "version": job.spec.version}
        tail = job.process.stderr_tail() if job.process is not None else ""
        if tail:
            details["stderr_tail"] = tail[-STDERR_TAIL_CHARS:]
        if returncode is not None:
            details["exit_code"] = returncode
        return FsupError(
            "HEALTH_CHECK_FAILED",
            f"{self.id} {job.spec.version}: {error}; {self.spec.version} keeps serving",
            details,
        )

    def _swap(self, job: _Job) -> None:
        """The atomic switch: the store, then the route; then retire the old process."""
        assert job.process is not None and job.port is not None
        old_process, old_port, old_stop = self.kept.process, self.port, self.spec.stop
        self._store_new_version(job)
        self.ctx.store.set_current(
            self.id, job.spec.version, job.port, job.process.pid, job.process.started_at
        )
        if self._process_scope is not None:
            self._process_scope.cancel(reason="replaced by a new version")  # its exit is expected
        self.spec, self.version_dir, self.port = job.spec, job.version_dir, job.port
        self.kept.extra_pids.discard(job.process.pid)
        if old_process is not None:
            self.kept.extra_pids.add(old_process.pid)
        self.kept.process = job.process
        self._process_scope = job.watch_scope
        self._gen = job.gen  # the staging watcher now reports for the active process
        self._tracker = RestartTracker(job.spec.restart, self.ctx.rng)
        self._healthy_since = None
        self._mark_healthy()
        old_backend = self.ctx.routes.publish(
            self.id, Backend(job.port, job.process.pid, job.spec.version)
        )
        job.swapped = True
        log.info("%s: swapped to %s (pid %s)", self.id, job.spec.version, job.process.pid)
        self._emit_job(job, {"stage": "swapping", "message": f"Routing to {job.spec.version}"})
        self._emit_job(job, {"stage": "stopping_old",
                             "message": f"Draining and stopping {job.previous_version}"})
        assert self.nursery is not None
        self.nursery.start_soon(self._retire, job, old_process, old_backend, old_port, old_stop)

    async def _retire(
        self,
        job: _Job,
        process: ProcessHandle | None,
        backend: Backend | None,
        port: int,
        stop: StopSpec,
    ) -> None:
        """Let in-flight requests finish on the old process (bounded), stop it, give back
        its port, prune old versions."""
        if backend is not None:
            with trio.move_on_after(DRAIN_BOUND_S):
                await backend.drained()
        if process is not None:
            await process.stop(stop.signum, stop.timeout)
            self.kept.extra_pids.discard(process.pid)
        await self._release_port(port)
        if job.kind == "update":
            await self._prune_versions()
        await self._post(_OldRetired(job.id))

    def _store_new_version(self, job: _Job) -> None:
        """An update's version joins the store at its swap, not before: a failed update
        leaves no trace there."""
        if job.manifest is not None:
            row = VersionRow(
                self.id, job.spec.version, job.manifest, str(job.version_dir), now_rfc3339()
            )
            self.ctx.store.put_version(row)

    def _switch_offline(self, job: _Job) -> None:
        """An update or rollback of a formation that is not running: switch the version."""
        self._store_new_version(job)
        self.ctx.store.set_current(self.id, job.spec.version, self.port, None, None)
        self.spec, self.version_dir = job.spec, job.version_dir
        self._tracker = RestartTracker(job.spec.restart, self.ctx.rng)
        job.swapped = True
        self._emit_job(job, {"stage": "swapping", "message": f"Now at {job.spec.version} "
                             f"(not started: the formation is {self.state.value})"})
        assert self.nursery is not None
        self.nursery.start_soon(self._finish_offline, job)

    async def _finish_offline(self, job: _Job) -> None:
        if job.kind == "update":
            await self._prune_versions()
        await self._post(_OldRetired(job.id))

    async def _prune_versions(self) -> None:
        stored = {row.version: row for row in self.ctx.store.versions(self.id)}
        for version in versions.to_prune(list(stored), self.spec.version):
            self.ctx.store.delete_version(self.id, version)
            await trio.to_thread.run_sync(versions.remove, Path(stored[version].path))
            log.info("%s: pruned version %s", self.id, version)

    def _abort_job(self, error: FsupError) -> None:
        """Undo a job that has not swapped: stop its process, give back its port, remove an
        update's version. Its waiters get `error` once the cleanup is done."""
        job = self._job
        if job is None or job.swapped or job.failure is not None:
            return
        job.failure = error
        log.warning("%s: %s to %s aborted: %s", self.id, job.kind, job.spec.version, error.message)
        job.scope.cancel(reason="job aborted")
        if job.watch_scope is not None:
            job.watch_scope.cancel(reason="job aborted")
        assert self.nursery is not None
        self.nursery.start_soon(self._clean_up_job, job)

    async def _clean_up_job(self, job: _Job) -> None:
        await job.prep_done.wait()
        if job.process is not None:
            await job.process.stop(job.spec.stop.signum, job.spec.stop.timeout)
            self.kept.extra_pids.discard(job.process.pid)
        if job.port is not None:
            await self._release_port(job.port)
        if job.kind == "update":
            if self.ctx.store.version(self.id, job.spec.version) is not None:
                self.ctx.store.delete_version(self.id, job.spec.version)
            await trio.to_thread.run_sync(versions.remove, job.version_dir)
        await self._post(_JobCleaned(job.id))

    def _finish_job(self, job: _Job) -> None:
        self._job = None
        if job.failure is not None:
            for waiter in self._take(job.waiters):
                waiter.fail(job.failure)
        cancelled = {"formation_id": self.id, "cancelled": True, "version": self.spec.version}
        for waiter in self._take(job.cancel_waiters):
            waiter.resolve(cancelled)
        if self._exit_after_job:
            for waiter in self._take(self._stop_waiters):
                waiter.resolve(self.result(self.state.value))
            self.stop_after_this_message()

    async def _release_port(self, port: int) -> None:
        if self.ctx.fleet is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await self.ctx.fleet.ask(ReleasePort(self.id, port))
            except ActorError:
                pass

    def _interrupted(self, by: str) -> FsupError:
        kind = self._job.kind if self._job is not None else "update"
        return FsupError(
            "OPERATION_CANCELLED",
            f"the {kind} of '{self.id}' was interrupted by {by}",
            {"formation_id": self.id, "stage": "health_check"},
        )

    def _emit_job(self, job: _Job, event: dict[str, Any]) -> None:
        for waiter in job.waiters:
            waiter.emit(event)

    # -- helpers ---------------------------------------------------------------------------

    def _set_state(self, new: State, reason: str) -> None:
        """Check and announce a transition (`formation_state_changed`; reasons in
        docs/decisions.md, "Formation core")."""
        if new is self.state:
            return
        check_transition(self.state, new)
        log.info("%s: %s -> %s (%s)", self.id, self.state.value, new.value, reason)
        old, self.state = self.state, new
        self._announce("formation_state_changed", {
            "formation_id": self.id, "from": old.value, "to": new.value, "reason": reason,
            "pid": self._pid(), "version": self.spec.version,
            "restart_count": self.kept.restart_count,
        })

    def _set_healthy(self, healthy: bool | None, error: str | None = None) -> None:
        """Record the health of the active process; a change to good or bad is announced
        (`formation_health_changed`); back to unknown (no process) is not: the state change
        says it."""
        changed = healthy is not None and healthy != self.healthy
        self.healthy = healthy
        if changed:
            self._announce("formation_health_changed",
                           {"formation_id": self.id, "healthy": healthy, "error": error})

    def _announce(self, type_: str, data: dict[str, Any]) -> None:
        if self.ctx.events is not None:
            self.ctx.events.publish(type_, data)

    def _set_desired(self, desired: str) -> None:
        row = self.ctx.store.formation(self.id)
        if row is not None and row.desired != desired:
            self.ctx.store.set_desired(self.id, desired)

    def _emit_start(self, event: dict[str, Any]) -> None:
        for waiter in self._start_waiters:
            waiter.emit(event)

    def _fail_start_waiters(self, by: str) -> None:
        error = FsupError(
            "OPERATION_CANCELLED",
            f"the start of '{self.id}' was interrupted by a {by} request",
            {"formation_id": self.id, "stage": "health_check"},
        )
        for waiter in self._take(self._start_waiters):
            waiter.fail(error)

    @staticmethod
    def _take(waiters: list[Reply]) -> list[Reply]:
        taken = list(waiters)
        waiters.clear()
        return taken

    def _pid(self) -> int | None:
        return self.kept.process.pid if self.kept.process is not None else None

    def result(self, status: str) -> dict[str, Any]:
        """The answer to a lifecycle request (and the data of its `complete` event)."""
        return {
            "formation_id": self.id,
            "status": status,
            "port": self.port,
            "version": self.spec.version,
            "pid": self._pid(),
            "healthy": self.healthy,
        }

    def snapshot(self) -> dict[str, Any]:
        row = self.ctx.store.formation(self.id)
        versions = [v.version for v in self.ctx.store.versions(self.id)]
        process = self.kept.process
        uptime = round(max(0.0, time.time() - process.started_at), 3) if process else None
        return {
            "id": self.id,
            "version": self.spec.version,
            "description": self.spec.description,
            "status": self.state.value,
            "port": self.port,
            "pid": self._pid(),
            "healthy": self.healthy,
            "restart_count": self.kept.restart_count,
            "uptime_s": uptime,
            "created_at": row.created_at if row else None,
            "updated_at": row.updated_at if row else None,
            "desired": row.desired if row else None,
            "versions": versions,
            "update_in_progress": self._job is not None,
            "last_exit_code": self.last_exit_code,
            "last_error": self.last_error,
        }


STDERR_TAIL_CHARS = 2000
# How long a swap waits for in-flight proxied requests to finish on the old process.
DRAIN_BOUND_S = 30.0


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "exited (exit code unknown: adopted from an earlier fsup)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"

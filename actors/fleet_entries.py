"""The fleet's hold on each formation: its actor under a supervisor of its own, so that the
fleet knows when the actor is over and can end it outright; the reconcile's kill of the
processes no formation owns; and the removal of a formation's files, which keeps the log of a
failed first deploy (`remove_files`).

A delete removes the store row and the entry only once the actor has ended (`until_ended`):
a formation whose actor still ran after its row was gone (a shutdown that timed out, or a
later request that replaced the exit) kept a process nobody could see or stop. Until then the
formation stays visible (reads show it with `deleting: true`) and every change of it is
refused with `FORMATION_BUSY` (`being_deleted`); once removal begins its supervisor restarts
its actor no more (`Entry.removing`, read by `supervise`'s `may_restart`), and the wait for the
actor's end is bounded, so a delete always gets its answer.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from supervisor.core.errors import FsupError
from supervisor.storage import failed_deploys
from supervisor.storage.home import Home

from .base import Actor, ActorError, ActorRef, Reply
from .formation import Start
from .formation.context import Kept
from .process import kill_strays, kill_unowned, scan_home
from .supervision import Intensity, Supervisor

log = logging.getLogger("fsup.fleet")

# How long an actor that answered its shutdown may take to end (it ends right after: a crash
# between the answer and the end, or a hang there, falls back to ending it outright).
ENDED_BOUND_S = 10.0

Sweep = Callable[[Path, str | None, frozenset[int], Callable[[], bool]], int]


@dataclass(frozen=True)
class FailedStart:
    """A first start that failed: the deployer's answer, and what is kept of it."""

    error: FsupError
    version: str
    at: str  # RFC 3339


@dataclass
class Entry:
    ref: ActorRef
    ports: set[int]
    kept: Kept
    logs: Path  # the log folder, made once (the log rotation asks for it every second)
    ended: trio.Event  # the actor's supervision is over: it ended, or was ended outright
    scope: trio.CancelScope  # ends the actor (and its supervisor) outright
    removing: bool = False
    resumed: bool = False  # its delete was accepted by an earlier fsup, killed during it
    removal_deadline: float = 0.0  # trio time by which the removal is over (Retry-After)
    removal_waiters: list[tuple[Reply, BaseException | None]] = field(default_factory=list)
    failed_start: FailedStart | None = None  # removed because its first start failed
    delete_asked: bool = False  # a delete was asked for (nothing of it is kept then)


async def supervise(
    name: str,
    factory: Callable[[], Actor],
    intensity: Intensity,
    ended: trio.Event,
    scope: trio.CancelScope,
    may_restart: Callable[[], bool] = lambda: True,
    *,
    task_status: trio.TaskStatus[ActorRef],
) -> None:
    """Run one actor under its own one-for-one supervisor (restarted as before when it
    crashes, unless `may_restart` says no: a formation being removed); `ended` is set once it
    is over, and cancelling `scope` ends it outright."""
    try:
        with scope:
            async with trio.open_nursery() as nursery:
                supervisor = Supervisor(nursery, intensity)
                ref = await supervisor.start(name, factory, may_restart=may_restart)
                task_status.started(ref)
    finally:
        ended.set()


async def until_ended(
    formation_id: str, entry: Entry, answered: bool, home: Path, sweep: Sweep | None = None
) -> None:
    """Wait for the formation's actor to end. One that `answered` its shutdown ends right
    after it (the machine answers a shutdown only as it ends: its Hypothesis invariant). One
    that did not (the shutdown timed out or failed, or a crash restarted the actor) is ended
    outright, and every process of the formation is killed (`sweep`, by default
    `process.kill_strays`)."""
    if answered:
        with trio.move_on_after(ENDED_BOUND_S):
            await entry.ended.wait()
            return
        log.error("%s: its actor answered its shutdown but did not end", formation_id)
    else:
        log.error("%s: its actor did not end with its shutdown", formation_id)
    log.error("%s: ending its actor outright", formation_id)
    entry.scope.cancel(reason=f"{formation_id} is removed")
    await entry.ended.wait()
    killed = await trio.to_thread.run_sync(
        sweep or kill_strays, home, formation_id, frozenset(), _never
    )
    if killed:
        log.error("%s: killed %d process(es) its actor left behind", formation_id, killed)


async def relay_start(ref: ActorRef, reply: Reply | None) -> tuple[Any, FsupError | None]:
    """Ask a formation to start, passing its progress on to `reply`; its result, or the error
    it failed with (`reply` is neither resolved nor failed: the caller decides)."""
    try:
        with await ref.request(Start()) as call:
            async for event in call.progress():
                if reply is not None:
                    reply.emit(event)
            return await call.result(), None
    except (FsupError, ActorError) as exc:
        return None, exc if isinstance(exc, FsupError) else FsupError("INTERNAL", str(exc))


async def forward_start(ref: ActorRef, reply: Reply | None) -> None:
    """Ask a (revived) formation to start; pass its progress and answer on to `reply`."""
    result, error = await relay_start(ref, reply)
    if reply is None:
        return
    if error is not None:
        reply.fail(error)
    else:
        reply.resolve(result)


def being_deleted(formation_id: str, entry: Entry) -> FsupError:
    """The answer to a change of a formation whose removal runs: retry once it is gone (by
    then a deploy of the same id is welcome, and anything else is a 404)."""
    left = max(1, math.ceil(entry.removal_deadline - trio.current_time()))
    return FsupError(
        "FORMATION_BUSY",
        f"formation '{formation_id}' is being deleted; retry when it is gone",
        {"formation_id": formation_id, "deleting": True, "retry_after_s": min(left, 5)},
    )


def already_exists(formation_id: str) -> FsupError:
    return FsupError(
        "FORMATION_ALREADY_EXISTS",
        f"formation '{formation_id}' already exists; update it with PUT "
        f"/rpc/formations/{formation_id} or delete it first",
        {"formation_id": formation_id},
    )


def _never() -> bool:
    return False


async def kill_unowned_of(formations: Mapping[str, Entry], home: Path) -> int:
    """Kill this home's processes that no formation owns; return how many. The scan runs
    first (in a thread) and what is owned is read after it, back in the loop: a process
    spawned while the scan ran is recorded by then, or was not there to be found. A formation
    whose spawn is still in flight is skipped: its new process may be in the scan before it
    is recorded (`Kept.spawning`)."""
    found: list[tuple[Any, str]] = await trio.to_thread.run_sync(scan_home, home)
    spawning = {fid for fid, entry in formations.items() if entry.kept.spawning}
    candidates = [(proc, fid) for proc, fid in found if fid not in spawning]
    owned = {pid for entry in formations.values() for pid in entry.kept.extra_pids}
    owned |= {e.kept.process.pid for e in formations.values() if e.kept.process is not None}
    return await trio.to_thread.run_sync(kill_unowned, candidates, None, owned)


def remove_files(home: Home, formation_id: str, failed: FailedStart | None) -> FsupError | None:
    """Remove a formation's folder and its logs (in a worker thread, once its processes are
    gone). A failed first deploy's logs are kept instead (`storage.failed_deploys`): then its
    error, with `details.log_dir` naming where, is returned for the deployer."""
    shutil.rmtree(home.formation_dir(formation_id), ignore_errors=True)
    logs = home.formation_logs(formation_id)
    if failed is None:
        shutil.rmtree(logs, ignore_errors=True)
        return None
    kept = home.failed_deploy_logs(formation_id)
    error = failed.error
    meta = {
        "formation_id": formation_id,
        "version": failed.version,
        "failed_at": failed.at,
        "code": error.code,
        "message": error.message,
    }
    try:
        failed_deploys.keep(logs, kept, meta)
    except OSError as exc:
        log.error("%s: cannot keep the failed deploy's logs: %s", formation_id, exc)
        shutil.rmtree(logs, ignore_errors=True)
        return error
    details = {**error.details, "log_dir": str(kept)}
    return FsupError(error.code, error.message, details, error.status)

"""The fleet against races (issue 17): a delete never removes a formation whose actor still
runs, a formation being deleted is not found from the delete on, and the reconcile never kills
a process a formation spawned while the reconcile scanned for strays.

In-process, as tests/test_fleet_actor.py: a real store and home in tmp_path, fake processes and
probes, virtual time; the reconcile's tests scan /proc for real marked processes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
import trio.testing
from test_fleet_actor import (
    HIGH,
    LOW,
    ROOT_INTENSITY,
    URL,
    World,
    ask,
    real_time_limit,
    refused,
)

from actors import process as process_module
from actors.base import ActorRef, ActorUnavailable
from actors.fleet import Delete, Describe, FleetActor, ListEntries, Lookup, Reconcile, Restore
from actors.formation import Restart, Snapshot, Start, Stop
from actors.process import HOME_ENV
from actors.supervision import Supervisor
from supervisor.runtime.ports import PortPool


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 10 ms of real idleness. These tests run the fleet's
    worker threads (installs, sweeps, the store): with a threshold of 0, a thread's real time
    counts as idle and the clock jumps past the very bounds under test (seen: 506 virtual
    seconds for a delete that took a few real milliseconds)."""
    return trio.testing.MockClock(autojump_threshold=0.01)


@asynccontextmanager
async def fleet_actor(world: World) -> AsyncIterator[tuple[ActorRef, FleetActor]]:
    """The fleet restored under a root supervisor, with its actor at hand."""
    done = threading.Event()
    actor = FleetActor(world.ctx, PortPool(LOW, HIGH))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(real_time_limit, done)
        fleet = await Supervisor(nursery, ROOT_INTENSITY).start("fleet", lambda: actor)
        await fleet.ask(Restore(URL))
        try:
            yield fleet, actor
        finally:
            done.set()
            nursery.cancel_scope.cancel()
    world.store.close()


async def test_a_delete_whose_shutdown_times_out_ends_the_actor_before_the_row_goes(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The process never stops (a stop that hangs): the shutdown's ask times out. The actor is
    ended outright and every process of the formation swept before the row and the entry go;
    before, the row went while the actor kept running with its process."""
    world = World(tmp_path)
    swept: list[tuple[str | None, frozenset[int]]] = []

    def sweep(home: Path, formation_id: str | None, owned: frozenset[int], stop: Any) -> int:
        swept.append((formation_id, owned))
        return 0

    world.ctx.kill_strays = sweep
    async with fleet_actor(world) as (fleet, _actor):
        await ask(fleet, world.bundle("web"))
        ref = await ask(fleet, Lookup("web"))
        process = world.launcher.last
        graceful = process.stop

        async def hung_stop(signum: int, grace: float) -> int | None:
            if signum == 9:
                return await graceful(signum, grace)
            await trio.sleep_forever()  # a stop that never comes back
            raise AssertionError("unreachable")

        process.stop = hung_stop  # type: ignore[method-assign]
        started = trio.current_time()
        assert await ask(fleet, Delete("web")) == {"id": "web", "deleted": True}
        assert trio.current_time() - started >= 315  # waited out REMOVE_BOUND_S first
        with pytest.raises(ActorUnavailable):
            ref.tell_nowait(Snapshot())  # the actor is over
        assert ("web", frozenset()) in swept  # every process of the formation swept
        assert not process.alive()  # the kept process was killed too
        assert world.store.formation("web") is None


async def test_a_formation_being_deleted_is_visible_to_reads_and_busy_to_changes(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The fleet marks the removal as it takes the delete, not in the background task that
    follows: a change looked up right behind the delete cannot reach the ending actor (409
    FORMATION_BUSY, being deleted), while a read still finds the formation, flagged, until it
    is gone (then 404). Before, it was 404 from the delete on, while its process still ran."""
    world = World(tmp_path)
    async with fleet_actor(world) as (fleet, _actor):
        await ask(fleet, world.bundle("web"))
        with await fleet.request(Delete("web")) as deleting:
            busy = await refused(fleet, Lookup("web", change=True))
            assert busy.code == "FORMATION_BUSY" and busy.details["deleting"] is True
            assert "being deleted; retry when it is gone" in busy.message
            assert busy.details["retry_after_s"] >= 1
            ref, flagged = await ask(fleet, Describe("web"))
            assert flagged is True and await ask(fleet, Lookup("web")) is ref
            assert [(fid, d) for fid, _, d in await ask(fleet, ListEntries())] == [("web", True)]
            assert (await refused(fleet, world.bundle("web"))).code == "FORMATION_BUSY"
            assert world.store.formation("web").deleting  # type: ignore[union-attr]
            assert await deleting.result() == {"id": "web", "deleted": True}
        assert (await refused(fleet, Lookup("web"))).code == "FORMATION_NOT_FOUND"
        assert await ask(fleet, ListEntries()) == []


@pytest.mark.parametrize("other", ["start", "restart", "stop"])
async def test_a_request_that_reaches_the_formation_behind_its_delete_cannot_undo_it(
    tmp_path: Path, autojump_clock: Any, other: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's race, in order: a request looks the formation up, the delete begins to
    stop it, then the request arrives. A start or restart is refused (409 FORMATION_BUSY), a
    stop waits for the exit; the delete is answered, nothing is spawned, the actor ends.
    Before, a restart spawned a new process and the delete was never answered; a stop was
    answered but the actor never ended."""
    world = World(tmp_path)
    world.launcher.ignores_term = True  # its stop takes the 3 s grace: the race's window
    async with fleet_actor(world) as (fleet, _actor):
        await ask(fleet, world.bundle("web"))
        ref = await ask(fleet, Lookup("web"))  # looked up before the delete
        with await fleet.request(Delete("web")) as deleting:
            while (await ask(ref, Snapshot()))["status"] != "stopping":  # noqa: ASYNC110
                await trio.sleep(0.01)
            if other == "stop":
                assert (await ask(ref, Stop()))["status"] == "stopped"  # once the exit is done
            else:
                error = await refused(ref, Start() if other == "start" else Restart())
                assert error.code == "FORMATION_BUSY" and error.details["exiting"] == "delete"
            assert await deleting.result() == {"id": "web", "deleted": True}
        assert len(world.launcher.spawned) == 1
        with pytest.raises(ActorUnavailable):
            ref.tell_nowait(Snapshot())
        assert world.store.formation("web") is None
        assert "did not end" not in caplog.text  # it ended by itself, not ended outright


@pytest.fixture
def marked(tmp_path: Path) -> Iterator[Any]:
    """Start real processes marked as formation `web`'s of the test's home (as a spawn would),
    and wait until each runs its program; all are killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        env = {"PATH": "/usr/bin:/bin", HOME_ENV: str(tmp_path / "home"), "FORMATION_ID": "web"}
        argv = [sys.executable, "-c", "import time; time.sleep(60)"]
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        started.append(proc)
        for _ in range(500):
            found = [p.pid for p, _ in process_module.processes_of_home(tmp_path / "home")]
            if proc.pid in found:
                break
            threading.Event().wait(0.01)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    try:
        return psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.parametrize("how", ["recorded_during_the_scan", "spawn_in_flight", "a_true_stray"])
async def test_the_reconcile_spares_what_a_formation_spawned_while_it_scanned(
    tmp_path: Path, autojump_clock: Any, marked: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The scan finds a process of `web` that the formation records while the scan runs (or
    whose spawn is still in flight once it has run): the reconcile must not kill it. Before,
    the owned pids were read before the scan, and it was killed as a stray. A process no
    formation owns is still killed."""
    world = World(tmp_path)
    async with fleet_actor(world) as (fleet, actor):
        await ask(fleet, world.bundle("web"))
        kept = actor.formations["web"].kept
        proc = marked()
        scan = process_module.processes_of_home

        def scan_while_spawning(home: Path) -> list[tuple[psutil.Process, str]]:
            found = scan(home)
            if how == "recorded_during_the_scan":
                trio.from_thread.run_sync(kept.extra_pids.add, proc.pid)
            elif how == "spawn_in_flight":
                trio.from_thread.run_sync(setattr, kept, "spawning", 1)
            return found

        monkeypatch.setattr(process_module, "processes_of_home", scan_while_spawning)
        answer = await ask(fleet, Reconcile())
        stray = how == "a_true_stray"
        assert answer["strays_killed"] == (1 if stray else 0)
        if stray:
            await trio.to_thread.run_sync(proc.wait, 5)
        assert _alive(proc) is not stray
        kept.spawning = 0

"""FleetActor in-process: a real SQLite store and home in tmp_path, fake processes and probes
(those of test_formation_actor), virtual time (`autojump_clock`, a trio MockClock with
autojump_threshold=0), and the fleet supervised as the server runs it (escalate=False).

What it proves: a deploy claims its id in the store before touching the disk, and a second one
is 409; a failed first start and a delete leave no row, folder or port behind and are announced
as `formation_deleted`; a restarted fleet adopts a live process, restarts what should run and
leaves stopped what should not; a formation that cannot be loaded stays listed `crashed` with
its reason; ports are never handed out twice and come back; a bug in a handler answers the
asker and the supervisor brings the fleet back from the store.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
from formation_fakes import MANIFEST, FakeLauncher, FakeListeners, FakeProbe
from port_blocks import PORT_HIGH

from actors.base import ActorCrashed, ActorRef
from actors.fleet import (
    Create,
    Delete,
    FleetActor,
    ListFormations,
    Lookup,
    PortStatus,
    Restore,
    ShutdownAll,
)
from actors.formation import Snapshot, Start, Stop
from actors.formation.context import FormationContext
from actors.port_requests import AllocatePort, ReleasePort
from actors.supervision import Intensity, Supervisor
from supervisor.core.errors import FsupError
from supervisor.core.manifest import parse_manifest
from supervisor.runtime.events import BusEvent, EventBus, Subscription
from supervisor.runtime.ports import PortPool
from supervisor.storage.home import Home
from supervisor.storage.store import Store, VersionRow

URL = "http://127.0.0.1:7890"
# Ports of this test process's block (tests/port_blocks.py), away from the formation ports
# a real server of the same run hands out from its low end.
LOW, HIGH = PORT_HIGH - 5, PORT_HIGH
ROOT_INTENSITY = Intensity(max_restarts=5, period=10.0, escalate=False)  # as supervisor.server


# Virtual time jumps while a worker thread runs (the fleet installs and removes files, a run
# scans logs in threads), so a `trio.fail_after` on the MockClock could expire while nothing is
# late. A hang is caught in real time instead, by a thread that waits out REAL_LIMIT_S.
REAL_LIMIT_S = 30.0


async def real_time_limit(done: threading.Event) -> None:
    if not await trio.to_thread.run_sync(done.wait, REAL_LIMIT_S):
        raise AssertionError(f"test still waiting after {REAL_LIMIT_S:g} s of real time")


class World:
    """One life of fsup on a home: store, bus, fake launcher and probe, the fleet's context."""

    def __init__(self, tmp: Path, healthy: Any = lambda: True) -> None:
        self.home = Home(tmp / "home")
        self.home.ensure()
        self.store = Store(self.home.state_db)
        self.bus = EventBus()
        self.launcher = FakeLauncher()
        self.probe = FakeProbe(healthy)
        self.ctx = FormationContext(
            self.home,
            self.store,
            self.launcher,
            lambda _: self.probe,
            "",
            random.Random(1),
            listeners=FakeListeners(),
            kill_strays=lambda *_: 0,
            events=self.bus,
        )
        self.staged = 0

    def bundle(self, formation_id: str, version: str = "1.0.0") -> Create:
        """A staged, validated bundle, as the intake hands it to the fleet."""
        self.staged += 1
        manifest = (
            MANIFEST.replace("id: web", f"id: {formation_id}")
            .replace("version: 1.0.0", f"version: {version}")
            .encode()
        )
        staged = self.home.root / f"staged-{self.staged}"
        staged.mkdir()
        (staged / "formation.yaml").write_bytes(manifest)
        return Create(parse_manifest(manifest), staged, manifest)

    def store_row(self, formation_id: str, port: int, manifest: bytes, desired: str) -> Path:
        """A formation as an earlier fsup left it in the store."""
        version_dir = self.home.version_dir(formation_id, "1.0.0")
        version_dir.mkdir(parents=True)
        (version_dir / "formation.yaml").write_bytes(manifest)
        row = VersionRow(formation_id, "1.0.0", manifest, str(version_dir), "2026-01-01T00:00:00Z")
        self.store.insert_formation(formation_id, port, row)
        self.store.set_desired(formation_id, desired)
        return version_dir


@asynccontextmanager
async def fleet_of(world: World) -> AsyncIterator[tuple[ActorRef, Supervisor]]:
    """The fleet under a root supervisor, restored (as the server does once it listens)."""
    done = threading.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(real_time_limit, done)
        roots = Supervisor(nursery, ROOT_INTENSITY)
        fleet = await roots.start("fleet", lambda: FleetActor(world.ctx, PortPool(LOW, HIGH)))
        await fleet.ask(Restore(URL))
        try:
            yield fleet, roots
        finally:
            done.set()
            nursery.cancel_scope.cancel()
    world.store.close()


async def ask(ref: ActorRef, message: Any) -> Any:
    return await ref.ask(message)


async def refused(ref: ActorRef, message: Any) -> FsupError:
    with pytest.raises(FsupError) as info:
        await ask(ref, message)
    return info.value


async def expect(subscription: Subscription, type_: str, **data: Any) -> BusEvent:
    async for event in subscription.receive:
        if event.type == type_ and all(event.data.get(k) == v for k, v in data.items()):
            return event
    raise AssertionError(f"the bus closed before {type_} {data}")


async def ids(fleet: ActorRef) -> list[str]:
    return [fid for fid, _ in await ask(fleet, ListFormations())]


async def snapshot(fleet: ActorRef, formation_id: str) -> dict[str, Any]:
    return await ask(await ask(fleet, Lookup(formation_id)), Snapshot())  # type: ignore[no-any-return]


async def allocated(fleet: ActorRef) -> int:
    return (await ask(fleet, PortStatus())).allocated  # type: ignore[no-any-return]


async def test_deploy_claims_the_id_and_a_second_deploy_is_409(
    tmp_path: Path, autojump_clock: Any
) -> None:
    world = World(tmp_path)
    async with fleet_of(world) as (fleet, _):
        with world.bus.subscribe() as events:
            result = await ask(fleet, world.bundle("web"))
            deployed = await expect(events, "formation_deployed", formation_id="web")
        assert (result["status"], result["version"]) == ("running", "1.0.0")
        assert LOW <= result["port"] <= HIGH and result["pid"] == world.launcher.last.pid
        assert deployed.data == {
            "formation_id": "web",
            "version": "1.0.0",
            "status": "running",
            "pid": result["pid"],
            "port": result["port"],
        }
        row = world.store.formation("web")
        assert row is not None and (row.desired, row.port, row.pid) == (
            "running",
            result["port"],
            result["pid"],
        )
        assert (world.home.version_dir("web", "1.0.0") / "formation.yaml").is_file()
        assert await ids(fleet) == ["web"]

        again = world.bundle("web", "2.0.0")
        error = await refused(fleet, again)
        assert (error.code, error.status) == ("FORMATION_ALREADY_EXISTS", 409)
        assert error.details == {"formation_id": "web"}
        assert again.staged_dir.is_dir()  # not consumed
        assert len(world.launcher.spawned) == 1 and await allocated(fleet) == 1
        assert world.store.formation("web").current_version == "1.0.0"  # type: ignore[union-attr]


async def test_an_id_the_store_already_holds_is_refused_before_the_disk_is_touched(
    tmp_path: Path, autojump_clock: Any
) -> None:
    world = World(tmp_path)
    async with fleet_of(world) as (fleet, _):
        # Another claimant's row, written after the fleet restored (so it is not in memory).
        world.store_row("taken", LOW + 1, MANIFEST.encode(), "stopped")
        precious = world.home.formation_dir("taken") / "data" / "keep.txt"
        precious.parent.mkdir(parents=True)
        precious.write_text("mine")
        bundle = world.bundle("taken")
        error = await refused(fleet, bundle)
        assert (error.code, error.status) == ("FORMATION_ALREADY_EXISTS", 409)
        assert precious.read_text() == "mine" and bundle.staged_dir.is_dir()
        assert world.launcher.spawned == [] and await allocated(fleet) == 0


async def test_a_failed_first_start_removes_the_formation_again(
    tmp_path: Path, autojump_clock: Any
) -> None:
    world = World(tmp_path, healthy=lambda: False)
    async with fleet_of(world) as (fleet, _):
        with world.bus.subscribe() as events:
            error = await refused(fleet, world.bundle("web"))
            gone = await expect(events, "formation_deleted", formation_id="web")
        assert error.code == "HEALTH_CHECK_FAILED"
        assert gone.data == {"formation_id": "web", "deployed": False}
        assert world.launcher.last.signals == [signal.SIGTERM] and not world.launcher.last.alive()
        assert world.store.formation("web") is None
        assert not world.home.formation_dir("web").exists()
        assert await ids(fleet) == [] and await allocated(fleet) == 0


async def test_a_first_start_cut_short_by_the_shutdown_is_kept_for_the_next_start(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """fsup stops while a deploy waits for its health check: the deploy is answered with the
    interruption, and the formation stays stored, meant to run, with its files."""
    world = World(tmp_path, healthy=lambda: False)
    async with fleet_of(world) as (fleet, _):
        async with trio.open_nursery() as nursery:
            errors: list[FsupError] = []

            async def deploy() -> None:
                errors.append(await refused(fleet, world.bundle("web")))

            nursery.start_soon(deploy)
            await trio.sleep(1.0)  # spawned, in its start gate
            await ask(fleet, ShutdownAll())
        assert errors and errors[0].code != "HEALTH_CHECK_FAILED", errors
        row = world.store.formation("web")
        assert row is not None and row.desired == "running"
        assert world.home.formation_dir("web").exists()


async def test_delete_removes_row_folder_and_port_and_announces_it(
    tmp_path: Path, autojump_clock: Any
) -> None:
    world = World(tmp_path)
    async with fleet_of(world) as (fleet, _):
        await ask(fleet, world.bundle("web"))
        process = world.launcher.last
        logs = world.home.formation_logs("web")
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "stdout.log").write_text("hello\n")
        with world.bus.subscribe() as events:
            assert await ask(fleet, Delete("web")) == {"id": "web", "deleted": True}
            gone = await expect(events, "formation_deleted")
        assert gone.data == {"formation_id": "web", "deployed": True}
        assert process.signals == [signal.SIGTERM] and not process.alive()
        assert world.store.formation("web") is None
        assert not world.home.formation_dir("web").exists() and not logs.exists()
        assert await ids(fleet) == [] and await allocated(fleet) == 0
        for message in (Lookup("web"), Delete("web")):
            assert (await refused(fleet, message)).code == "FORMATION_NOT_FOUND"
        # The id is free again.
        assert (await ask(fleet, world.bundle("web")))["status"] == "running"


async def test_a_restarted_fsup_brings_back_what_should_run_and_only_that(
    tmp_path: Path, autojump_clock: Any
) -> None:
    first = World(tmp_path)
    async with fleet_of(first) as (fleet, _):
        up = await ask(fleet, first.bundle("up-one"))
        down = await ask(fleet, first.bundle("down-one"))
        await ask(await ask(fleet, Lookup("down-one")), Stop())
    # fsup is gone; its fake processes cannot be adopted (no such pids), so "up-one" must be
    # started again, and "down-one", stopped by its operator, must stay stopped.
    second = World(tmp_path)
    with second.bus.subscribe() as events:
        async with fleet_of(second) as (fleet, _):
            running = await expect(
                events, "formation_state_changed", formation_id="up-one", to="running"
            )
            assert running.data["from"] == "starting"
            assert sorted(await ids(fleet)) == ["down-one", "up-one"]
            again = await snapshot(fleet, "up-one")
            assert (again["status"], again["port"]) == ("running", up["port"])
            assert again["pid"] == second.launcher.last.pid
            stopped = await snapshot(fleet, "down-one")
            assert (stopped["status"], stopped["port"]) == ("stopped", down["port"])
            assert len(second.launcher.spawned) == 1
            # The stored ports are the fleet's again: a new deploy gets neither.
            new = await ask(fleet, second.bundle("new-one"))
            assert new["port"] not in (up["port"], down["port"])


@pytest.fixture
def survivor() -> Iterator[subprocess.Popen[bytes]]:
    """A formation's process that outlived fsup (a real one: adoption checks its pid and start
    time)."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


async def test_a_process_still_alive_is_adopted_not_spawned_again(
    tmp_path: Path, autojump_clock: Any, survivor: subprocess.Popen[bytes]
) -> None:
    world = World(tmp_path)
    world.store_row("web", LOW + 2, MANIFEST.encode(), "running")
    world.store.set_process("web", survivor.pid, psutil.Process(survivor.pid).create_time())
    async with fleet_of(world) as (fleet, _):
        adopted = await snapshot(fleet, "web")
        assert (adopted["status"], adopted["pid"], adopted["port"]) == (
            "running",
            survivor.pid,
            LOW + 2,
        )
        assert world.launcher.spawned == []
        assert survivor.poll() is None  # not taken for a stray


async def test_an_unrestorable_formation_stays_listed_crashed_with_its_reason(
    tmp_path: Path, autojump_clock: Any
) -> None:
    world = World(tmp_path)
    world.store_row("broken", LOW, b"id: broken\nversion: 1.0.0\n", "running")  # no command
    async with fleet_of(world) as (fleet, _):
        assert await ids(fleet) == ["broken"]
        shown = await snapshot(fleet, "broken")
        assert (shown["status"], shown["pid"], shown["port"]) == ("crashed", None, LOW)
        assert shown["last_error"].startswith("could not be restored: ")
        assert "command" in shown["last_error"]
        start = await refused(await ask(fleet, Lookup("broken")), Start())
        assert (start.code, start.status) == ("INVALID_FORMATION", 409)
        assert "command" in start.details["reason"]
        assert world.launcher.spawned == []
        # Its row still claims its port and its id.
        assert (await ask(fleet, world.bundle("other")))["port"] != LOW
        assert (await refused(fleet, world.bundle("broken"))).code == "FORMATION_ALREADY_EXISTS"
        assert await ask(fleet, Delete("broken")) == {"id": "broken", "deleted": True}
        assert world.store.formation("broken") is None
        assert not world.home.formation_dir("broken").exists()


async def test_ports_are_never_handed_out_twice_and_come_back(
    tmp_path: Path, autojump_clock: Any
) -> None:
    world = World(tmp_path)
    size = HIGH - LOW + 1
    async with fleet_of(world) as (fleet, _):
        main = (await ask(fleet, world.bundle("web")))["port"]
        extra = [await ask(fleet, AllocatePort("web")) for _ in range(size - 1)]
        assert sorted([main, *extra]) == list(range(LOW, HIGH + 1))
        assert await allocated(fleet) == size
        assert (await refused(fleet, AllocatePort("web"))).code == "PORTS_EXHAUSTED"
        no_room = world.bundle("more")
        assert (await refused(fleet, no_room)).code == "PORTS_EXHAUSTED"
        assert world.store.formation("more") is None and no_room.staged_dir.is_dir()
        # A port given back is the one handed out next; one not held is ignored.
        await ask(fleet, ReleasePort("web", extra[0]))
        await ask(fleet, ReleasePort("web", extra[0]))
        await ask(fleet, ReleasePort("nobody", extra[1]))
        assert await allocated(fleet) == size - 1
        assert await ask(fleet, AllocatePort("web")) == extra[0]
        # Deleting the formation gives back every port it held.
        await ask(fleet, Delete("web"))
        assert await allocated(fleet) == 0


async def test_a_port_asked_for_an_unknown_formation_is_not_lost(
    tmp_path: Path, autojump_clock: Any
) -> None:
    world = World(tmp_path)
    async with fleet_of(world) as (fleet, _):
        assert (await refused(fleet, AllocatePort("ghost"))).code == "FORMATION_NOT_FOUND"
        assert await allocated(fleet) == 0


async def test_a_bug_in_a_handler_is_answered_and_the_fleet_comes_back_from_the_store(
    tmp_path: Path, autojump_clock: Any
) -> None:
    world = World(tmp_path)
    async with fleet_of(world) as (fleet, roots):
        await ask(fleet, world.bundle("web"))
        # Not an FsupError: the staged folder vanished under the fleet (a bug elsewhere).
        vanished = world.bundle("lost")
        vanished.staged_dir.rename(tmp_path / "elsewhere")
        with world.bus.subscribe() as events:
            with pytest.raises(ActorCrashed):
                await ask(fleet, vanished)
            # The next incarnation rebuilt itself from the store: "web" is back and running,
            # nothing of the failed deploy remains, and deploys work again.
            assert await ids(fleet) == ["web"]
            assert roots.restarts["fleet"] == 1
            await expect(events, "formation_state_changed", formation_id="web", to="running")
        assert world.store.formation("lost") is None
        assert (await ask(fleet, world.bundle("lost")))["status"] == "running"
        assert sorted(await ids(fleet)) == ["lost", "web"]

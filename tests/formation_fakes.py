"""Fakes for the formation actor's tests on virtual time: processes that exit when told,
probes that answer what a test says, a listener table, a fleet that hands out staging ports,
and the `World` that wires them into a FormationActor with a real store in tmp_path."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from actors.base import Actor, ActorRef, Reply, spawn
from actors.formation import Snapshot, Start
from actors.formation.actor import FormationActor
from actors.formation.context import FormationContext, Kept
from actors.listener import Holder, PortOwners
from actors.log_source import LogSource
from actors.port_requests import AllocatePort, ReleasePort
from actors.spawn import LaunchSpec
from actors.supervision import Supervisor
from supervisor.core.manifest import FormationSpec, parse_manifest
from supervisor.storage.home import Home
from supervisor.storage.store import Store, VersionRow


class FakeProcess:
    def __init__(self, pid: int, ignores_term: bool = False) -> None:
        self.pid = pid
        self.started_at = time.time()
        self.ignores_term = ignores_term
        self.signals: list[int] = []
        self._code: int | None = None
        self._gone = trio.Event()

    @property
    def returncode(self) -> int | None:
        return self._code

    def alive(self) -> bool:
        return not self._gone.is_set()

    def exit(self, code: int) -> None:
        if self.alive():
            self._code = code
            self._gone.set()

    async def wait(self) -> int | None:
        await self._gone.wait()
        return self._code

    async def stop(self, signum: int, grace: float) -> int | None:
        self.signals.append(signum)
        if not self.ignores_term:
            self.exit(-signum)
        with trio.move_on_after(grace):
            await self.wait()
        if self.alive():
            self.signals.append(signal.SIGKILL)
            self.exit(-signal.SIGKILL)
        return self._code

    def kill_group(self) -> None:
        pass

    async def stderr_tail(self) -> str:
        return "fake stderr\n"


class FakeLauncher:
    def __init__(self, ignores_term: bool = False) -> None:
        self.spawned: list[tuple[float, FakeProcess]] = []
        self.specs: list[LaunchSpec] = []
        self.ignores_term = ignores_term
        self.on_spawn: Callable[[LaunchSpec], None] = lambda spec: None

    async def spawn(self, spec: LaunchSpec) -> FakeProcess:
        self.on_spawn(spec)
        process = FakeProcess(1000 + len(self.spawned), self.ignores_term)
        self.spawned.append((trio.current_time(), process))
        self.specs.append(spec)
        return process

    def adopted_log(self, log_dir: Path, version: str, pid: int, started_at: float) -> LogSource:
        return LogSource(log_dir, version, int(started_at * 1e9))

    @property
    def last(self) -> FakeProcess:
        return self.spawned[-1][1]


class FakeProbe:
    """Healthy when `healthy()` says so; counts its checks."""

    def __init__(self, healthy: Callable[[], bool]) -> None:
        self.healthy = healthy
        self.checks: list[float] = []
        self.unhealthy_ports: set[int] = set()

    async def check(self, port: int) -> str | None:
        self.checks.append(trio.current_time())
        return None if self.healthy() and port not in self.unhealthy_ports else "503"


class FakeListeners:
    """Who listens on a port: the process spawned on it (the formation's own), unless a
    stranger was put there with `squat`. Records every check (port, roots)."""

    def __init__(self) -> None:
        self.strangers: dict[int, Holder] = {}
        self.checks: list[tuple[int, tuple[int, ...]]] = []

    def squat(self, port: int, pid: int = 4242, name: str = "squatter") -> None:
        self.strangers[port] = Holder(pid, name)

    async def owners(self, port: int, roots: Collection[int]) -> PortOwners:
        self.checks.append((port, tuple(roots)))
        if port in self.strangers:
            return PortOwners(ours=False, foreign=(self.strangers[port],))
        return PortOwners(ours=bool(roots))

    def tree_checks(self) -> int:
        """Ownership checks of a running process (a pre-spawn check has no roots)."""
        return sum(1 for _, roots in self.checks if roots)


MANIFEST = """
id: web
version: 1.0.0
command: ["python3", "app.py"]
env: {A: b}
health: {http: /health, interval: 0.5, timeout: 5}
restart:
  policy: on-failure
  backoff: {initial: 1, factor: 2, max: 8, jitter: 0}
  reset_after: 30
  max_restarts: 3
  window: 100
stop: {timeout: 3}
"""


class World:
    def __init__(self, tmp: Path, launcher: FakeLauncher, probe: FakeProbe, spec: FormationSpec):
        self.home = Home(tmp)
        self.home.ensure()
        self.store = Store(self.home.state_db)
        self.store.insert_formation(
            spec.id, 8001, VersionRow(spec.id, spec.version, b"", str(tmp), "2026-01-01T00:00:00Z")
        )
        self.launcher = launcher
        self.probe = probe
        self.spec = spec
        self.kept = Kept()
        self.listeners = FakeListeners()
        self.ctx = FormationContext(
            self.home,
            self.store,
            launcher,
            lambda h: probe,
            "http://127.0.0.1:7890",
            random.Random(1),
            listeners=self.listeners,
        )

    def actor(self) -> FormationActor:
        return FormationActor(self.ctx, self.spec.id, self.spec, self.home.root, 8001, self.kept)


@asynccontextmanager
async def running_world(
    tmp_path: Path,
    healthy: Callable[[], bool] = lambda: True,
    manifest: str = MANIFEST,
    ignores_term: bool = False,
) -> AsyncIterator[tuple[World, ActorRef]]:
    world = World(
        tmp_path, FakeLauncher(ignores_term), FakeProbe(healthy), parse_manifest(manifest.encode())
    )
    async with trio.open_nursery() as nursery:
        ref = await Supervisor(nursery).start("formation:web", world.actor)
        yield world, ref
        nursery.cancel_scope.cancel()
    world.store.close()


async def start(ref: ActorRef) -> tuple[list[dict[str, Any]], Any]:
    with await ref.request(Start()) as call:
        events = [e async for e in call.progress()]
        return events, await call.result()


async def state_of(ref: ActorRef) -> str:
    return (await ref.ask(Snapshot()))["status"]  # type: ignore[no-any-return]


async def wait_state(ref: ActorRef, wanted: str) -> float:
    # Polled from outside on virtual time: the actor has no state-change events to await yet.
    while await state_of(ref) != wanted:  # noqa: ASYNC110
        await trio.sleep(0.01)
    return trio.current_time()


async def respawned(world: World, ref: ActorRef, count: int) -> None:
    """Wait until the `count`-th process is up and the formation is running."""
    while len(world.launcher.spawned) < count or await state_of(ref) != "running":  # noqa: ASYNC110
        await trio.sleep(0.01)


class FakeFleet(Actor):
    """Hands out ports for staging processes and records what comes back."""

    name = "fleet"

    def __init__(self) -> None:
        super().__init__()
        self.next_port = 9001
        self.released: list[int] = []

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        if isinstance(message, AllocatePort):
            self.next_port += 1
            return self.next_port - 1
        if isinstance(message, ReleasePort):
            self.released.append(message.port)
            return None
        raise AssertionError(message)


def staged_bundle(tmp_path: Path, version: str) -> tuple[Path, FormationSpec, bytes]:
    staged = tmp_path / f"staged-{version}"
    staged.mkdir()
    manifest = MANIFEST.replace("version: 1.0.0", f"version: {version}").encode()
    (staged / "formation.yaml").write_bytes(manifest)
    return staged, parse_manifest(manifest), manifest


@asynccontextmanager
async def world_with_fleet(
    tmp_path: Path, healthy: Callable[[], bool]
) -> AsyncIterator[tuple[World, ActorRef, FakeFleet]]:
    world = World(tmp_path, FakeLauncher(), FakeProbe(healthy), parse_manifest(MANIFEST.encode()))
    world.ctx.routes.register("web")
    fleet = FakeFleet()
    async with trio.open_nursery() as nursery:
        world.ctx.fleet = await spawn(nursery, fleet)
        ref = await Supervisor(nursery).start("formation:web", world.actor)
        yield world, ref, fleet
        nursery.cancel_scope.cancel()
    world.store.close()

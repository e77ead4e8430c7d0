"""Strays: what outlives a formation's process outside its process group (a grandchild that
called setsid). `kill_strays` (shared by the fleet's restore and reconcile and a formation's
exit) kills exactly those of one home and formation; `StraySweeper` never lets a sweep meet a
process the formation spawned after it took its list of owned pids."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import trio
from formation_fakes import FakeLauncher, FakeProbe, World, state_of

from actors.formation import Start
from actors.process import HOME_ENV, ProcessHandle, StraySweeper, kill_strays
from actors.supervision import Supervisor
from supervisor.core.manifest import parse_manifest

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
# A shell that owns a child (`sleep`), as a main process owns its helpers.
PARENT = ["/bin/sh", "-c", f"{sys.executable} -c 'import time; time.sleep(60)' & wait"]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(home: str, formation_id: str, argv: list[str] = SLEEP) -> subprocess.Popen[bytes]:
        env = {
            "PATH": "/usr/bin:/bin",
            HOME_ENV: str(tmp_path / home),
            "FORMATION_ID": formation_id,
        }
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        for child in _children(proc.pid):
            child.kill()
        proc.kill()
        proc.wait()


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _wait_marked(procs: list[subprocess.Popen[bytes]]) -> None:
    """Until each process runs its program (before exec, its environment is the test's)."""
    for proc in procs:
        for _ in range(200):
            try:
                if "FORMATION_ID" in psutil.Process(proc.pid).environ():
                    break
            except psutil.Error:
                pass
            time.sleep(0.01)


def _gone(proc: subprocess.Popen[bytes]) -> bool:
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_only_the_formations_unowned_processes_of_this_home_are_killed(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    owner = spawn("home", "a", PARENT)
    stray = spawn("home", "a")
    other_formation = spawn("home", "b")
    other_home = spawn("elsewhere", "a")
    _wait_marked([owner, stray, other_formation, other_home])
    for _ in range(200):  # the owner's child, with the marker too
        if _children(owner.pid):
            break
        time.sleep(0.01)
    (child,) = _children(owner.pid)

    assert kill_strays(tmp_path / "home", "a", set(), stop=lambda: True) == 0
    assert stray.poll() is None
    assert kill_strays(tmp_path / "home", "a", {owner.pid}) == 1
    assert _gone(stray)
    assert owner.poll() is None and child.is_running()
    assert other_formation.poll() is None and other_home.poll() is None
    # The fleet's sweep (any formation of the home) takes the other formation's stray too.
    assert kill_strays(tmp_path / "home", None, {owner.pid}) == 1
    assert _gone(other_formation)
    assert owner.poll() is None and other_home.poll() is None


@dataclass
class FakeKept:
    process: ProcessHandle | None = None
    extra_pids: set[int] = field(default_factory=set)
    spawning: int = 0


class BlockingSweep:
    """A sweep that records what it was told and waits for `release` (in its worker thread)."""

    def __init__(self) -> None:
        self.calls: list[frozenset[int]] = []
        self.stopped: list[bool] = []
        self.started = threading.Semaphore(0)
        self.release = threading.Event()

    def __call__(
        self, home: Path, formation_id: str | None, owned: frozenset[int], stop: Callable[[], bool]
    ) -> int:
        self.calls.append(owned)
        self.started.release()
        self.release.wait(10)
        self.stopped.append(stop())
        return 0

    async def wait_started(self) -> None:
        assert await trio.to_thread.run_sync(self.started.acquire, True, 10)


class _Pid:
    def __init__(self, pid: int) -> None:
        self.pid = pid


async def test_a_spawn_during_a_sweep_stops_it_and_it_sweeps_again_sparing_the_new_process(
    tmp_path: Path,
) -> None:
    kept = FakeKept(extra_pids={7})
    sweep = BlockingSweep()
    sweeper = StraySweeper(tmp_path, "web", kept, sweep)
    async with trio.open_nursery() as nursery:
        sweeper.start(nursery)
        await sweep.wait_started()
        assert sweep.calls == [frozenset({7})]
        with sweeper.spawning():
            await trio.sleep(0.05)  # the spawn takes a while; the sweep must not restart yet
            sweep.release.set()
            await trio.sleep(0.05)
            assert len(sweep.calls) == 1
        kept.process = _Pid(99)  # type: ignore[assignment]  # recorded right after the spawn
        await sweep.wait_started()
    assert sweep.calls == [frozenset({7}), frozenset({7, 99})]
    assert sweep.stopped == [True, False]


async def test_a_sweep_undisturbed_runs_once(tmp_path: Path) -> None:
    sweep = BlockingSweep()
    sweep.release.set()
    sweeper = StraySweeper(tmp_path, "web", FakeKept(), sweep)
    async with trio.open_nursery() as nursery:
        sweeper.start(nursery)
    assert sweep.calls == [frozenset()] and sweep.stopped == [False]


RESTARTING = """
id: web
version: 1.0.0
command: ["python3", "app.py"]
health: {http: /health, interval: 0.05, timeout: 5}
restart: {policy: always, backoff: {initial: 0.05, factor: 1, max: 1, jitter: 0}}
"""


async def test_an_exit_sweeps_without_the_dead_process_and_never_meets_the_new_one(
    tmp_path: Path,
) -> None:
    """The main exits (its group is killed at once); the sweep that follows runs in a thread
    and spares no pid of the dead process. The restart spawns the new main while that sweep is
    still running: it stops before killing anything, and sweeps again sparing the new main."""
    world = World(
        tmp_path, FakeLauncher(), FakeProbe(lambda: True), parse_manifest(RESTARTING.encode())
    )
    sweep = BlockingSweep()
    world.ctx.kill_strays = sweep
    async with trio.open_nursery() as nursery:
        ref = await Supervisor(nursery).start("formation:web", world.actor)
        first = await ref.ask(Start())
        assert first["pid"] == 1000 and sweep.calls == []
        world.launcher.last.exit(-9)
        await sweep.wait_started()
        assert sweep.calls == [frozenset()]
        while len(world.launcher.spawned) < 2 or await state_of(ref) != "running":  # noqa: ASYNC110
            await trio.sleep(0.01)
        assert len(sweep.calls) == 1  # no new sweep while the first one still runs
        sweep.release.set()
        await sweep.wait_started()
        assert sweep.calls == [frozenset(), frozenset({1001})]
        assert sweep.stopped[0] is True
        nursery.cancel_scope.cancel()
    world.store.close()

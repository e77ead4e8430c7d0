"""The job runner on its own: built from its ports (a post into a channel, a real store, fake
processes, a fake fleet, a process registry), with no formation actor at all. What it proves
is what the actor relies on: a retire drains, stops and forgets exactly the process it is
given; a clean-up gives back everything its preparation set up."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from formation_fakes import (
    MANIFEST,
    FakeFleet,
    FakeLauncher,
    FakeProbe,
    FakeProcess,
    World,
    staged_bundle,
)

from actors.base import spawn
from actors.formation.jobs import JobPorts, JobRunner
from actors.formation.launch import launch_spec
from actors.formation.machine import effects as fx
from actors.formation.machine.messages import JobCleaned, JobStaged, OldRetired
from actors.formation.processes import ProcessRegistry
from actors.formation.watchers import Posted
from actors.process import StraySweeper
from supervisor.core.manifest import StopSpec, parse_manifest
from supervisor.runtime.routing import Backend

STOP = StopSpec(timeout=3)


@dataclass
class Bench:
    """A job runner and what it was handed, as a test sees them."""

    world: World
    runner: JobRunner
    processes: ProcessRegistry
    fleet: FakeFleet
    posted: trio.MemoryReceiveChannel[Posted]
    nursery: trio.Nursery

    async def next_posted(self) -> Posted:
        with trio.fail_after(60):
            return await self.posted.receive()


@asynccontextmanager
async def job_bench(tmp_path: Path) -> AsyncIterator[Bench]:
    world = World(
        tmp_path, FakeLauncher(), FakeProbe(lambda: True), parse_manifest(MANIFEST.encode())
    )
    send, receive = trio.open_memory_channel[Posted](16)
    processes = ProcessRegistry()
    fleet = FakeFleet()
    async with trio.open_nursery() as nursery:
        ports = JobPorts(
            formation_id="web",
            post=send.send,
            store=world.store,
            launcher=world.launcher,
            listeners=world.listeners,
            fleet=await spawn(nursery, fleet),
            processes=processes,
            strays=StraySweeper(world.home.root, "web", world.kept, lambda *_: 0),
            kept=world.kept,
            launch_spec=partial(launch_spec, world.home, world.ctx.server_url, "web"),
            serving_version=lambda: "1.0.0",
        )
        yield Bench(world, JobRunner(ports), processes, fleet, receive, nursery)
        nursery.cancel_scope.cancel()
    world.store.close()


async def test_a_retire_drains_then_stops_the_process_it_is_given(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with job_bench(tmp_path) as bench:
        old, bystander = FakeProcess(2001), FakeProcess(2002)
        bench.processes.add(old)
        bench.processes.add(bystander)
        bench.world.kept.extra_pids.add(old.pid)
        replaced = Backend(8001, old.pid, "1.0.0")
        replaced.acquire()  # a proxied request still in flight on the old process
        bench.runner.route_replaced(replaced)
        retire = fx.RetireOld(job=7, pid=old.pid, port=8001, stop=STOP, prune=False)
        bench.runner.do(retire, bench.nursery)
        await trio.sleep(5)
        assert old.signals == [] and old.pid in bench.processes.pids()  # still draining
        replaced.release()
        assert await bench.next_posted() == OldRetired(7)
        assert old.signals == [signal.SIGTERM] and not old.alive()
        assert bench.processes.pids() == {bystander.pid} and bystander.signals == []
        assert bench.world.kept.extra_pids == set()
        assert bench.fleet.released == [8001]


async def test_a_retire_drains_only_the_route_a_swap_replaced_once(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The replaced route is taken by the retire that follows it: a later retire (no swap in
    between) does not wait on it again."""
    async with job_bench(tmp_path) as bench:
        first, second = FakeProcess(2001), FakeProcess(2002)
        bench.processes.add(first)
        bench.processes.add(second)
        stuck = Backend(8001, first.pid, "1.0.0")
        stuck.acquire()  # never released: its retire waits the whole drain bound
        bench.runner.route_replaced(stuck)
        bench.runner.do(fx.RetireOld(1, first.pid, None, STOP, False), bench.nursery)
        assert await bench.next_posted() == OldRetired(1)
        drained_at = trio.current_time()
        bench.runner.do(fx.RetireOld(2, second.pid, None, STOP, False), bench.nursery)
        assert await bench.next_posted() == OldRetired(2)
        assert trio.current_time() - drained_at < 1 and bench.processes.pids() == set()


async def test_a_clean_up_gives_back_the_staging_process_port_and_version(
    tmp_path: Path,
) -> None:
    # On the real clock: the preparation installs files in worker threads, and autojump_clock
    # would run the wait's deadline out while they run.
    async with job_bench(tmp_path) as bench:
        staged, spec, _ = staged_bundle(tmp_path, "2.0.0")
        version_dir = bench.world.home.version_dir("web", "2.0.0")
        current_dir = bench.world.home.version_dir("web", "1.0.0")
        current_dir.mkdir(parents=True)
        prepare = fx.PrepareJob(1, "update", spec, version_dir, staged, current_dir, live=True)
        bench.runner.do(prepare, bench.nursery)
        staged_event = await bench.next_posted()
        staging = bench.world.launcher.last
        assert staged_event == JobStaged(1, staging.pid, 9001, staging.started_at)
        assert bench.world.launcher.specs[-1].env["PORT"] == "9001" and version_dir.exists()
        assert bench.processes.pids() == {staging.pid}
        assert bench.world.kept.extra_pids == {staging.pid}
        _, watchers = bench.processes.watch(staging.pid)  # as the actor's Watch would
        clean = fx.CleanUpJob(
            1, STOP, remove_version=True, version="2.0.0", version_dir=version_dir
        )
        bench.runner.do(clean, bench.nursery)
        assert watchers.cancel_called  # at once: its outcomes are stale from now on
        assert await bench.next_posted() == JobCleaned(1)
        assert staging.signals == [signal.SIGTERM] and not staging.alive()
        assert bench.processes.pids() == set() and bench.world.kept.extra_pids == set()
        assert bench.fleet.released == [9001] and not version_dir.exists()


async def test_an_effect_that_is_not_a_job_fails_loudly(tmp_path: Path) -> None:
    async with job_bench(tmp_path) as bench:
        with pytest.raises(AssertionError):
            bench.runner.do(fx.SweepStrays(), bench.nursery)  # type: ignore[arg-type]


def test_the_registry_forgets_a_handle_once_and_cancels_a_watcher_once() -> None:
    registry = ProcessRegistry()
    assert registry.get(None) is None and registry.pop(None) is None
    process = FakeProcess(41)
    registry.add(process)  # type: ignore[arg-type]
    handle, scope = registry.watch(41)
    assert handle is process and registry.get(41) is process
    registry.unwatch(41)
    assert scope.cancel_called
    registry.unwatch(41)  # nothing left to cancel: no error
    assert registry.pop(41) is process and registry.pop(41) is None
    assert registry.pids() == frozenset()
    with pytest.raises(KeyError):
        registry.watch(41)  # a watch of a process the driver does not hold is a bug

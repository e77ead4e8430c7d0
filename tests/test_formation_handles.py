"""A formation actor keeps a handle only for the processes it still runs (issue 17: memory
that stays flat): operator restarts and stops used to leave the old process's handle behind,
one per restart for the formation's lifetime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from formation_fakes import MANIFEST, FakeLauncher, FakeProbe, World, start, state_of

from actors.formation import Restart, Stop
from actors.formation.actor import FormationActor
from actors.supervision import Supervisor
from supervisor.core.manifest import parse_manifest


async def test_restarts_and_stops_leave_no_handle_of_an_old_process(
    tmp_path: Path, autojump_clock: Any
) -> None:
    world = World(
        tmp_path, FakeLauncher(), FakeProbe(lambda: True), parse_manifest(MANIFEST.encode())
    )
    made: list[FormationActor] = []

    def factory() -> FormationActor:
        made.append(world.actor())
        return made[-1]

    async with trio.open_nursery() as nursery:
        ref = await Supervisor(nursery).start("formation:web", factory)
        actor = made[-1]
        await start(ref)
        for _ in range(5):
            await ref.ask(Restart())
            assert actor.processes.pids() == {world.launcher.last.pid}
        await ref.ask(Stop())
        assert await state_of(ref) == "stopped" and actor.processes.pids() == set()
        await start(ref)
        assert actor.processes.pids() == {world.launcher.last.pid}
        assert len(world.launcher.spawned) == 7
        nursery.cancel_scope.cancel()
    world.store.close()

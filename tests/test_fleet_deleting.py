"""A delete always ends (issue 17, review of the merged removal): an actor that crashes after
answering its shutdown is not restarted, one that answers and then lingers is ended outright
after a bound, a second delete waits for the first, an interrupted delete is resumed by the
next fsup, and a request that reaches an ended actor is answered as the fleet sees it now.

In-process, as tests/test_fleet_removal.py: a real store and home, fake processes, virtual time.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import test_fleet_removal
import trio
from formation_fakes import MANIFEST
from test_fleet_actor import World, ask, fleet_of
from test_fleet_removal import fleet_actor

from actors.base import Actor, ActorRef, Reply
from actors.fleet import Delete, Describe, ListEntries, Lookup
from actors.fleet_entries import ENDED_BOUND_S
from actors.formation.actor import FormationActor
from actors.formation.machine.messages import Restart
from actors.supervision import Supervisor
from supervisor import operations
from supervisor.core.errors import FsupError

# Virtual time that waits for the fleet's worker threads (see test_fleet_removal).
autojump_clock = test_fleet_removal.autojump_clock


async def test_an_actor_that_crashes_after_answering_its_shutdown_is_not_restarted(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The shutdown is answered, then the actor crashes before it returns. Before, its
    supervisor restarted it from the store row (still there), the new copy ran on, `ended`
    was never set and the delete never answered. Now it is not restarted and the delete ends."""
    world = World(tmp_path)
    async with fleet_actor(world) as (fleet, _actor):
        await ask(fleet, world.bundle("web"))
        ref = await ask(fleet, Lookup("web"))

        def crash(self: Actor) -> None:
            raise RuntimeError("a bug between the shutdown's answer and the actor's end")

        monkeypatch.setattr(FormationActor, "stop_after_this_message", crash)
        assert await ask(fleet, Delete("web")) == {"id": "web", "deleted": True}
        # Not the bounded fallback: it says so in the log (a check of the virtual time it took
        # could be fooled by the clock's jump while a worker thread runs on a busy machine).
        assert "ending its actor outright" not in caplog.text
        assert "not restarted (ending)" in caplog.text
        assert len(world.launcher.spawned) == 1 and not world.launcher.last.alive()
        assert world.store.formation("web") is None
        with pytest.raises(FsupError) as gone:
            await ask(fleet, Lookup("web"))
        assert gone.value.code == "FORMATION_NOT_FOUND"
        with pytest.raises(Exception):  # noqa: B017,PT011 - the actor is over
            ref.tell_nowait(Restart())


async def test_an_actor_that_answers_its_shutdown_and_lingers_is_ended_after_a_bound(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """An actor that answers its shutdown and never ends: the fleet waits `ENDED_BOUND_S`,
    then ends it outright and sweeps its processes; the delete is answered. Before, it hung."""
    world = World(tmp_path)
    swept: list[str | None] = []
    world.ctx.kill_strays = lambda home, fid, owned, stop: swept.append(fid) or 0
    async with fleet_actor(world) as (fleet, _actor):
        await ask(fleet, world.bundle("web"))
        monkeypatch.setattr(FormationActor, "stop_after_this_message", lambda self: None)
        started = trio.current_time()
        assert await ask(fleet, Delete("web")) == {"id": "web", "deleted": True}
        assert trio.current_time() - started >= ENDED_BOUND_S
        assert "answered its shutdown but did not end" in caplog.text
        assert "web" in swept and world.store.formation("web") is None


async def test_a_second_delete_waits_for_the_first_and_gets_the_same_answer(
    tmp_path: Path, autojump_clock: Any
) -> None:
    world = World(tmp_path)
    world.launcher.ignores_term = True  # the stop takes its grace: both deletes overlap
    async with fleet_actor(world) as (fleet, _actor):
        await ask(fleet, world.bundle("web"))
        with await fleet.request(Delete("web")) as first:
            with await fleet.request(Delete("web")) as second:
                assert await second.result() == {"id": "web", "deleted": True}
            assert await first.result() == {"id": "web", "deleted": True}
        assert len(world.launcher.spawned) == 1 and world.store.formation("web") is None


async def test_a_delete_interrupted_by_a_restart_of_fsup_is_resumed(
    tmp_path: Path, autojump_clock: Any, caplog: Any
) -> None:
    """The store says a delete was accepted (fsup was killed during it): the next fsup
    resumes it on restore, nothing is spawned, and the formation ends gone."""
    world = World(tmp_path)
    world.store_row("web", 20100, MANIFEST.encode(), "running")
    world.store.mark_deleting("web")
    assert world.store.formation("web").desired == "stopped"  # type: ignore[union-attr]
    async with fleet_of(world) as (fleet, _roots):
        while await ask(fleet, ListEntries()):  # noqa: ASYNC110
            await trio.sleep(0.1)
        with pytest.raises(FsupError) as gone:
            await ask(fleet, Describe("web"))
        assert gone.value.code == "FORMATION_NOT_FOUND"
        assert world.launcher.spawned == []
        assert world.store.formation("web") is None
        assert not world.home.formation_dir("web").exists()
    assert "resuming the delete of web interrupted by a restart of fsup" in caplog.text


class _Fleet(Actor):
    """A fleet that answers lookups as told (`gone`: 404, `deleting`: 409, else found)."""

    name = "fleet"

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        assert isinstance(message, Lookup) and message.change
        if self.answer == "gone":
            raise FsupError("FORMATION_NOT_FOUND", f"formation '{message.formation_id}' not found")
        if self.answer == "deleting":
            raise FsupError(
                "FORMATION_BUSY", f"formation '{message.formation_id}' is being deleted"
            )
        return None


class _Ended(Actor):
    """A formation's actor that ends as soon as it starts (its mailbox closes)."""

    name = "formation:x"

    async def on_start(self) -> None:
        self.stop_after_this_message()

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        return None


@pytest.mark.parametrize(
    ("fleet_says", "code", "status"),
    [
        ("gone", "FORMATION_NOT_FOUND", 404),
        ("deleting", "FORMATION_BUSY", 409),
        ("there", "FORMATION_UNAVAILABLE", 503),
    ],
)
async def test_a_request_that_reaches_an_ended_actor_is_answered_as_the_fleet_sees_it(
    fleet_says: str, code: str, status: int
) -> None:
    """An update racing a delete got `503 FORMATION_UNAVAILABLE "formation:x has ended"`: the
    internal actor name, and the wrong code once the formation is gone (404)."""
    async with trio.open_nursery() as nursery:
        supervisor = Supervisor(nursery)
        fleet = await supervisor.start("fleet", lambda: _Fleet(fleet_says))
        send, receive = trio.open_memory_channel[Any](1)
        receive.close()  # an actor whose mailbox is gone: it has ended
        ended = ActorRef("formation:x", send)
        last = await operations.outcome(operations.relay(ended, Restart(), "stopping", fleet, "x"))
        nursery.cancel_scope.cancel()
    assert last.error is not None and last.error.code == code
    assert last.error.status == status
    assert "formation:x" not in last.error.message


async def test_a_store_that_cannot_record_the_delete_does_not_stop_it(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The marker only serves a resume after a crash: a store error writing it is logged and
    the delete goes on (before the fix's guard, the entry would stay marked, never removed)."""
    world = World(tmp_path)
    async with fleet_actor(world) as (fleet, _actor):
        await ask(fleet, world.bundle("web"))

        def full(formation_id: str) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(world.store, "mark_deleting", full)
        assert await ask(fleet, Delete("web")) == {"id": "web", "deleted": True}
        assert "cannot record the delete" in caplog.text
        assert world.store.formation("web") is None

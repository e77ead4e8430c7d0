"""Operations as event streams: heartbeats while an actor is quiet; an ended actor is a 503."""

from __future__ import annotations

from typing import Any

import trio

from actors.base import DEFERRED, Actor, Reply, spawn
from supervisor.operations import relay


class Slow(Actor):
    """Answers 40 s after being asked, with one progress event at 20 s."""

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        assert reply is not None and self.nursery is not None

        async def later() -> None:
            await trio.sleep(20)
            reply.emit({"stage": "halfway"})
            await trio.sleep(20)
            reply.resolve({"done": True})

        self.nursery.start_soon(later)
        return DEFERRED


async def test_relay_sends_heartbeats_while_the_actor_is_quiet(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Slow())
        items = [(trio.current_time(), item) async for item in relay(ref, "go", "first")]
        nursery.cancel_scope.cancel()
    kinds = [None if item is None else item.kind for _, item in items]
    assert kinds == [None, "progress", None, "complete"]
    assert [round(at) for at, _ in items] == [15, 20, 35, 40]


class Ends(Actor):
    """Ends after its first message, as a formation's actor ends after its delete."""

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        self.stop_after_this_message()
        return "bye"


async def test_a_request_that_reaches_an_ended_actor_is_a_503_not_a_500() -> None:
    """A restart whose lookup came just before a delete reaches the actor after it ended."""
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Ends(), "formation:web")
        assert await ref.ask("delete") == "bye"
        items = [item async for item in relay(ref, "restart", "stopping")]
    assert len(items) == 1 and items[0] is not None and items[0].error is not None
    assert items[0].error.code == "FORMATION_UNAVAILABLE" and items[0].error.status == 503
    assert items[0].data["stage"] == "stopping"

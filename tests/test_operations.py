"""Operations as event streams: heartbeats while an actor is quiet."""

from __future__ import annotations

from typing import Any

import trio

from actors.base import DEFERRED, Actor, Reply, spawn
from supervisor.runtime.operations import relay


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

"""The actor base and one-for-one supervision, on virtual time."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.base import DEFERRED, Actor, ActorCrashed, ActorUnavailable, Reply, spawn
from actors.supervision import Escalation, Intensity, Supervisor
from supervisor.core.errors import FsupError


class Counter(Actor):
    """A small actor: counts, answers, defers, fails on demand."""

    name = "counter"
    instances = 0

    def __init__(self) -> None:
        super().__init__()
        Counter.instances += 1
        self.count = 0
        self.parked: list[Reply] = []

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        match message:
            case "inc":
                self.count += 1
                return self.count
            case "slow":
                await trio.sleep(1)
                self.count += 10
                return self.count
            case "park":
                assert reply is not None
                reply.emit({"stage": "parked"})
                self.parked.append(reply)
                return DEFERRED
            case "release":
                for parked in self.parked:
                    parked.resolve("released")
                return len(self.parked)
            case "refuse":
                raise FsupError("INVALID_REQUEST", "no thanks")
            case "boom":
                raise RuntimeError("boom")
            case "quit":
                self.stop_after_this_message()
                return "bye"
        raise AssertionError(message)


async def test_ask_answers_in_order(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Counter())
        results = []

        async def ask(msg: str) -> None:
            results.append(await ref.ask(msg))

        async with trio.open_nursery() as callers:
            callers.start_soon(ask, "slow")
            await trio.sleep(0.1)
            callers.start_soon(ask, "inc")
        # One message at a time: "inc" waits until "slow" finishes.
        assert results == [10, 11]
        nursery.cancel_scope.cancel()


async def test_domain_error_goes_to_the_asker_and_actor_survives() -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Counter())
        with pytest.raises(FsupError) as info:
            await ref.ask("refuse")
        assert info.value.code == "INVALID_REQUEST"
        assert await ref.ask("inc") == 1
        nursery.cancel_scope.cancel()


async def test_deferred_reply_streams_progress_then_answers() -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Counter())
        with await ref.request("park") as call:
            events = []
            async with trio.open_nursery() as inner:
                inner.start_soon(ref.ask, "release")

                async def read() -> None:
                    async for event in call.progress():
                        events.append(event)

                inner.start_soon(read)
            assert events == [{"stage": "parked"}]
            assert await call.result() == "released"
        nursery.cancel_scope.cancel()


async def test_pending_replies_fail_when_the_actor_stops() -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Counter())
        with await ref.request("park") as parked:
            assert await ref.ask("quit") == "bye"
            with pytest.raises(ActorUnavailable):
                await parked.result()
        with pytest.raises(ActorUnavailable):
            await ref.ask("inc")


async def test_queued_requests_fail_when_the_actor_stops(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Counter())
        outcomes: list[Any] = []

        async def ask(msg: str) -> None:
            try:
                outcomes.append(await ref.ask(msg))
            except ActorUnavailable:
                outcomes.append("unavailable")

        async with trio.open_nursery() as callers:
            callers.start_soon(ask, "slow")
            await trio.sleep(0.1)
            callers.start_soon(ask, "quit")
            await trio.sleep(0.1)
            callers.start_soon(ask, "inc")
        assert outcomes == [10, "bye", "unavailable"]


async def test_caller_owns_the_timeout(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Counter())
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(0.5):
                await ref.ask("slow")
        # The actor finished the slow request anyway and is still serving.
        assert await ref.ask("inc") == 11
        nursery.cancel_scope.cancel()


async def test_supervisor_restarts_a_crashed_child_and_ref_stays_valid() -> None:
    Counter.instances = 0
    async with trio.open_nursery() as nursery:
        supervisor = Supervisor(nursery, Intensity(max_restarts=3, period=10))
        ref = await supervisor.start("counter", Counter)
        assert await ref.ask("inc") == 1
        with pytest.raises(ActorCrashed):
            await ref.ask("boom")
        # A fresh incarnation (state reset) behind the same ref.
        assert await ref.ask("inc") == 1
        assert Counter.instances == 2
        assert supervisor.restarts["counter"] == 1
        nursery.cancel_scope.cancel()


async def test_supervisor_escalates_after_too_many_crashes(autojump_clock: trio.abc.Clock) -> None:
    with pytest.RaisesGroup(Escalation, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(nursery, Intensity(max_restarts=2, period=10))
            ref = await supervisor.start("counter", Counter)
            for _ in range(3):
                with pytest.raises(ActorCrashed):
                    await ref.ask("boom")
                await trio.sleep(1)


async def test_crashes_spread_out_in_time_do_not_escalate(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        supervisor = Supervisor(nursery, Intensity(max_restarts=1, period=5))
        ref = await supervisor.start("counter", Counter)
        for _ in range(4):
            with pytest.raises(ActorCrashed):
                await ref.ask("boom")
            await trio.sleep(6)
        assert await ref.ask("inc") == 1
        nursery.cancel_scope.cancel()


async def test_normal_exit_is_not_restarted() -> None:
    Counter.instances = 0
    async with trio.open_nursery() as nursery:
        supervisor = Supervisor(nursery)
        ref = await supervisor.start("counter", Counter)
        assert await ref.ask("quit") == "bye"
        with pytest.raises(ActorUnavailable):
            await ref.ask("inc")
    assert Counter.instances == 1

"""The event bus: ids, fan-out, resume, and slow subscribers dropped without waiting."""

from __future__ import annotations

from supervisor.runtime.events import EventBus


async def test_subscribers_get_events_in_order_with_monotonic_ids() -> None:
    bus = EventBus()
    with bus.subscribe() as one, bus.subscribe() as two:
        for i in range(5):
            bus.publish("search_progress", {"i": i}, search_id="s1")
        got_one = [one.receive.receive_nowait() for _ in range(5)]
        got_two = [two.receive.receive_nowait() for _ in range(5)]
    assert [e.id for e in got_one] == [1, 2, 3, 4, 5] == [e.id for e in got_two]
    assert got_one[0].envelope() == {
        "type": "search_progress",
        "ts": got_one[0].ts,
        "search_id": "s1",
        "data": {"i": 0},
    }


async def test_resume_after_last_event_id_replays_the_gap() -> None:
    bus = EventBus()
    for i in range(10):
        bus.publish("log", {"i": i})
    with bus.subscribe(after=7) as late:
        assert [late.receive.receive_nowait().id for _ in range(3)] == [8, 9, 10]
        bus.publish("log", {"i": 10})
        assert late.receive.receive_nowait().id == 11


async def test_resume_from_beyond_the_history_says_reset() -> None:
    bus = EventBus(history=5)
    for i in range(20):
        bus.publish("log", {"i": i})
    with bus.subscribe(after=3) as late:
        first = late.receive.receive_nowait()
        assert first.type == "reset"
        assert [late.receive.receive_nowait().id for _ in range(5)] == [16, 17, 18, 19, 20]


async def test_a_subscriber_that_never_reads_is_told_and_dropped() -> None:
    bus = EventBus(buffer=8)
    with bus.subscribe() as slow, bus.subscribe() as fast:
        delivered = []
        for i in range(50):
            bus.publish("log", {"i": i})  # never waits, whatever the subscribers do
            delivered.append(fast.receive.receive_nowait().id)
        assert delivered == list(range(1, 51))
        received = []
        async for event in slow.receive:
            received.append(event)
        assert received[-1].type == "overflow"
        assert len(received) == 8 and slow.dropped
    assert bus.dropped == 1


async def test_close_ends_open_subscriptions() -> None:
    bus = EventBus()
    with bus.subscribe() as sub:
        bus.close()
        events = [e async for e in sub.receive]
    assert events == []

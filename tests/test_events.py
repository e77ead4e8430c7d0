"""The event bus: ids, fan-out, resume, and slow subscribers dropped without waiting."""

from __future__ import annotations

import gc
import weakref
from contextlib import suppress

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.runtime.events import MAX_SNAPSHOTS, SNAPSHOTS, EventBus


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


# -- the history's bounds (issue 17: memory that stays flat) ---------------------------------


async def test_the_history_never_holds_more_than_its_count_or_its_bytes() -> None:
    bus = EventBus(history=50, history_bytes=4096)
    for i in range(500):
        bus.publish("log", {"message": "x" * (i % 300)})
        stats = bus.statistics()
        assert stats["history"] <= 50 and stats["history_bytes"] <= 4096
    kept = bus.history(limit=1000)
    assert kept[-1].id == 500 and sum(e.size for e in kept) <= 4096
    assert [e.id for e in kept] == list(range(kept[0].id, 501))  # the newest, without a gap


async def test_an_event_larger_than_the_byte_bound_is_sent_but_not_kept() -> None:
    bus = EventBus(history_bytes=1024)
    bus.publish("log", {"message": "small"})
    with bus.subscribe() as live:
        big = bus.publish("search_hit_found", {"snippet": "y" * 5000}, search_id="s1")
        assert live.receive.receive_nowait().id == big.id
    assert bus.history() == [] and bus.statistics()["history_bytes"] == 0
    with bus.subscribe(after=1) as late:  # it missed the big one: told to re-fetch
        assert late.receive.receive_nowait().type == "reset"
    with bus.subscribe(after=big.id) as current:  # saw everything: nothing to replay
        with pytest.raises(trio.WouldBlock):
            current.receive.receive_nowait()


async def test_only_the_latest_snapshot_of_each_kind_is_kept_and_replayed_in_order() -> None:
    bus = EventBus()
    bus.publish("log", {"i": 0})  # 1
    for i in range(100):
        bus.publish("status", {"i": i})
        bus.publish("search_progress", {"i": i}, search_id="a")
        bus.publish("search_progress", {"i": i}, search_id="b")
    bus.publish("log", {"i": 1})  # 302
    kept = bus.history(limit=1000)
    assert [(e.type, e.search_id, e.data["i"]) for e in kept] == [
        ("log", None, 0),
        ("status", None, 99),
        ("search_progress", "a", 99),
        ("search_progress", "b", 99),
        ("log", None, 1),
    ]
    with bus.subscribe(after=1) as late:  # superseded snapshots are no gap: no reset
        replayed = [late.receive.receive_nowait() for _ in range(4)]
    assert [e.id for e in replayed] == [e.id for e in kept[1:]]


async def test_snapshots_are_bounded_and_a_deleted_search_leaves_none() -> None:
    bus = EventBus()
    for n in range(MAX_SNAPSHOTS * 3):
        bus.publish("search_stats", {"n": n}, search_id=f"s{n}")
    assert bus.statistics()["history"] == MAX_SNAPSHOTS
    bus.publish("search_progress", {}, search_id="gone")
    bus.publish("search_stats", {}, search_id="gone")
    bus.forget_search("gone")
    assert [e for e in bus.history(limit=1000) if e.search_id == "gone"] == []


async def test_a_closed_subscriber_leaves_nothing_behind() -> None:
    bus = EventBus(buffer=16)
    gone = []
    for _ in range(100):
        with bus.subscribe(after=0) as sub:
            bus.publish("log", {})
            gone.append(weakref.ref(sub))
        del sub
    gc.collect()
    assert [ref for ref in gone if ref() is not None] == []
    assert bus.statistics()["subscribers"] == 0 and bus.dropped == 0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["log", "status", "search_progress", "formation_state_changed"]),
            st.sampled_from([None, "a", "b"]),
            st.integers(0, 200),
        ),
        max_size=80,
    ),
    st.integers(0, 90),
)
async def test_a_resume_gets_every_kept_event_after_its_id_or_a_reset(
    published: list[tuple[str, str | None, int]], after: int
) -> None:
    bus = EventBus(history=10, history_bytes=1500, buffer=1000)
    events = [bus.publish(kind, {"pad": "z" * pad}, sid) for kind, sid, pad in published]
    with bus.subscribe(after=after) as late:
        got = []
        with suppress(trio.WouldBlock):
            while True:
                got.append(late.receive.receive_nowait())
    if got and got[0].type == "reset":
        assert after > bus.last_id or any(
            e.id > after and e.type not in SNAPSHOTS and e not in bus.history(limit=1000)
            for e in events
        )
        got = got[1:]
    else:  # every event after `after` that no later snapshot superseded
        latest = {(e.type, e.search_id): e for e in events if e.type in SNAPSHOTS}
        wanted = [
            e
            for e in events
            if e.id > after and (e.type not in SNAPSHOTS or latest[(e.type, e.search_id)] is e)
        ]
        assert got == wanted
    assert [e.id for e in got] == sorted({e.id for e in got})

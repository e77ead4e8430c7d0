"""The formations' timelines in the store: envelopes kept in order per formation, written in
batches (on a full batch, a read, the flusher's tick and a clean close), bounded per
formation with a cheap trim, there again after a reopen, and deleted with their formation.
And the bus's observer that feeds them (`server.timeline_keeper`)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import trio

from supervisor.runtime.events import EventBus
from supervisor.server import flush_timeline, timeline_keeper
from supervisor.storage.store import TIMELINE_KEEP, Store, VersionRow
from supervisor.storage.store.timeline import TIMELINE_BATCH, TRIM_EVERY


def deployed(store: Store, *ids: str) -> Store:
    for formation_id in ids:
        version = VersionRow(formation_id, "1.0.0", b"", "/x", "2026-01-01T00:00:00Z")
        store.insert_formation(formation_id, 8000, version)
    return store


def envelope(formation_id: str, n: int) -> str:
    data = {"formation_id": formation_id, "n": n}
    return json.dumps(
        {"type": "formation_state_changed", "ts": "t", "search_id": None, "data": data}
    )


def record(store: Store, formation_id: str, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        store.record_event(formation_id, envelope(formation_id, n))


def rows(path: Path, formation_id: str | None = None) -> int:
    with sqlite3.connect(path) as db:
        if formation_id is None:
            return int(db.execute("SELECT COUNT(*) FROM timeline").fetchone()[0])
        query = "SELECT COUNT(*) FROM timeline WHERE formation_id = ?"
        return int(db.execute(query, (formation_id,)).fetchone()[0])


def numbers(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["n"] for e in events]


def test_envelopes_come_back_per_formation_oldest_first_newest_kept(tmp_path: Path) -> None:
    store = deployed(Store(tmp_path / "state.db"), "web", "api")
    record(store, "web", 5)
    record(store, "api", 2)
    assert rows(tmp_path / "state.db") == 0  # waiting in memory
    assert numbers(store.timeline("web", 100)) == [0, 1, 2, 3, 4]  # a read writes first
    assert numbers(store.timeline("web", 2)) == [3, 4]
    assert numbers(store.timeline("api", 100)) == [0, 1]
    assert store.timeline("web", 1)[0]["type"] == "formation_state_changed"
    store.close()


def test_a_clean_close_writes_and_a_reopen_reads_them(tmp_path: Path) -> None:
    store = deployed(Store(tmp_path / "state.db"), "web")
    record(store, "web", 3)
    store.close()
    assert rows(tmp_path / "state.db", "web") == 3
    again = Store(tmp_path / "state.db")
    try:
        assert numbers(again.timeline("web", 10)) == [0, 1, 2]
    finally:
        again.close()


def test_a_full_batch_is_written_at_once(tmp_path: Path) -> None:
    store = deployed(Store(tmp_path / "state.db"), "web")
    record(store, "web", TIMELINE_BATCH)
    assert rows(tmp_path / "state.db", "web") == TIMELINE_BATCH
    store.close()


def test_each_formation_keeps_its_newest_within_the_bound(tmp_path: Path) -> None:
    """Many more envelopes than kept: the table holds at most keep + trim + batch rows per
    formation at any time, a quiet formation keeps its own, and the newest are there."""
    path = tmp_path / "state.db"
    store = deployed(Store(path), "web", "quiet")
    record(store, "quiet", 3)
    bound = TIMELINE_KEEP + TRIM_EVERY + TIMELINE_BATCH
    total = 3 * TIMELINE_KEEP + 17
    for start in range(0, total, 50):
        record(store, "web", min(50, total - start), start)
        store.flush_timeline()
        assert rows(path, "web") <= bound
    kept = numbers(store.timeline("web", 1000))
    assert kept == list(range(total - 1000, total))
    assert numbers(store.timeline("quiet", 10)) == [0, 1, 2]
    store.close()


def test_a_reopened_store_trims_at_the_first_write(tmp_path: Path) -> None:
    """The trim count is not kept across restarts: the first write after an open trims, so
    restarts of fsup cannot grow a timeline past its bound."""
    path = tmp_path / "state.db"
    store = deployed(Store(path), "web")
    with sqlite3.connect(path) as db:  # as if many restarts each added a few
        db.executemany(
            "INSERT INTO timeline (formation_id, envelope) VALUES ('web', ?)",
            [(envelope("web", n),) for n in range(TIMELINE_KEEP + 50)],
        )
    record(store, "web", 1, TIMELINE_KEEP + 50)
    store.flush_timeline()
    assert rows(path, "web") == TIMELINE_KEEP
    store.close()


def test_a_deleted_formation_takes_its_timeline_along(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = deployed(Store(path), "web", "api")
    record(store, "web", 3)
    record(store, "api", 1)
    store.flush_timeline()
    record(store, "web", 2, 3)  # still waiting when the delete comes
    store.delete_formation("web")
    assert rows(path, "web") == 0
    record(store, "web", 1, 9)  # a late envelope of the deleted formation
    deployed(store, "web")  # a new formation under the same id
    assert store.timeline("web", 100) == []
    assert numbers(store.timeline("api", 100)) == [0]
    store.close()


def test_the_keeper_keeps_formation_events_only(tmp_path: Path) -> None:
    store = deployed(Store(tmp_path / "state.db"), "web")
    bus = EventBus()
    bus.observe(timeline_keeper(store))
    bus.publish("formation_state_changed", {"formation_id": "web", "to": "running"})
    bus.publish("log", {"formation_id": "web", "message": "not a formation event"})
    bus.publish("formation_health_changed", {"formation_id": "web", "healthy": False})
    bus.publish("formation_deleted", {"formation_id": "web"})  # its timeline goes with it
    bus.publish("search_state_changed", {"state": "running"}, "s1")
    sent = [e.envelope() for e in bus.history() if e.type.startswith("formation_")][:2]
    assert store.timeline("web", 10) == sent  # the envelopes exactly as the stream has them
    store.close()


async def test_the_flusher_writes_waiting_envelopes_soon(
    tmp_path: Path, autojump_clock: Any
) -> None:
    path = tmp_path / "state.db"
    store = deployed(Store(path), "web")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flush_timeline, store, 0.25)
        await trio.sleep(1)
        record(store, "web", 2)
        await trio.sleep(0.3)
        assert rows(path, "web") == 2
        nursery.cancel_scope.cancel()
    assert store.timeline_waiting is None
    store.close()

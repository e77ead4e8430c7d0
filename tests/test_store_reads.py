"""The store's memory of formation rows and its batched audit trail (issue 11).

A listing reads each formation's row and versions: once read, they come from memory until
this process changes them. Audit rows wait in memory and are written in batches: none is lost
on a clean close, and the trail read back always shows every call recorded before.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
from formation_fakes import running_world

from actors.formation import Snapshot
from supervisor.server import flush_audit
from supervisor.storage.store import AUDIT_BATCH, AUDIT_KEEP, Store, VersionRow
from supervisor.storage.store.audit import REFUSED_KEEP, TRIM_EVERY


def _selects(store: Store) -> list[str]:
    """The SELECTs the store's connection runs from now on."""
    seen: list[str] = []

    def trace(statement: str) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    store.connection.set_trace_callback(trace)  # what the connection runs
    return seen


def _version(formation_id: str, version: str) -> VersionRow:
    return VersionRow(formation_id, version, b"", "/x", "2026-01-01T00:00:00Z")


def test_rows_and_versions_are_read_once_until_written(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.insert_formation("web", 8001, _version("web", "1.0.0"))
    seen = _selects(store)
    for _ in range(3):
        assert store.formation("web").desired == "stopped"  # type: ignore[union-attr]
        assert [v.version for v in store.versions("web")] == ["1.0.0"]
    assert len(seen) == 1  # the versions; the row was read back when it was inserted
    store.set_desired("web", "running")
    store.put_version(_version("web", "1.1.0"))
    assert store.formation("web").desired == "running"  # type: ignore[union-attr]
    assert [v.version for v in store.versions("web")] == ["1.0.0", "1.1.0"]
    store.set_process("web", 42, 1.0)
    store.set_current("web", "1.1.0", 8002, 43, 2.0)
    row = store.formation("web")
    assert row is not None and (row.pid, row.port, row.current_version) == (43, 8002, "1.1.0")
    store.delete_version("web", "1.0.0")
    assert [v.version for v in store.versions("web")] == ["1.1.0"]
    store.delete_formation("web")
    assert store.formation("web") is None and store.versions("web") == []
    store.close()


def test_a_failed_write_is_not_remembered(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.insert_formation("web", 8001, _version("web", "1.0.0"))
    assert store.formation("web") is not None
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_formation("web", 8001, _version("web", "1.0.0"))
    seen = _selects(store)
    assert store.formation("web") is not None
    assert len(seen) == 1  # asked again after the failed write
    store.close()


async def test_a_listing_reads_nothing_from_the_store(tmp_path: Path) -> None:
    """Snapshots after the first: no SELECT (issue 11: two per formation per listing)."""
    async with running_world(tmp_path) as (world, ref):
        first = await ref.ask(Snapshot())
        seen = _selects(world.store)
        for _ in range(5):
            again = await ref.ask(Snapshot())
            assert {**again, "uptime_s": None} == {**first, "uptime_s": None}
        assert seen == []


def _audit(store: Store, n: int) -> None:
    for i in range(n):
        store.record_audit("key", "GET", f"/rpc/formations?i={i}", 200, 1.0, "127.0.0.1", "")


def _count(path: Path) -> Any:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]


def test_audit_rows_wait_and_are_written_on_a_clean_close(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _audit(store, 3)
    assert _count(tmp_path / "state.db") == 0  # waiting in memory
    store.close()
    assert _count(tmp_path / "state.db") == 3
    again = Store(tmp_path / "state.db")
    assert [e["path"] for e in again.audit_tail(10)] == [f"/rpc/formations?i={i}" for i in range(3)]
    again.close()


def test_the_trail_read_back_shows_every_recorded_call(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _audit(store, 2)
    assert len(store.audit_tail(10)) == 2
    _audit(store, AUDIT_BATCH)  # a full batch is written at once
    assert _count(tmp_path / "state.db") == 2 + AUDIT_BATCH
    store.close()


async def test_the_flusher_writes_waiting_rows_soon(tmp_path: Path, autojump_clock: Any) -> None:
    store = Store(tmp_path / "state.db")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flush_audit, store, 0.25)
        await trio.sleep(1)
        _audit(store, 2)
        await trio.sleep(0.3)
        assert _count(tmp_path / "state.db") == 2
        _audit(store, 1)
        await trio.sleep(0.3)
        assert _count(tmp_path / "state.db") == 3
        nursery.cancel_scope.cancel()
    assert store.audit_waiting is None
    store.close()


def _calls(store: Store, n: int, accepted: bool, tag: str) -> None:
    for i in range(n):
        store.record_audit(
            "",
            "POST",
            f"/api/v1/{tag}/{i}",
            200 if accepted else 401,
            1.0,
            "::1",
            "bearer",
            authenticated=accepted,
        )


def _kept(path: Path) -> dict[int, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT authenticated, COUNT(*) FROM audit GROUP BY 1").fetchall())


def test_a_flood_of_refused_calls_keeps_its_own_bounded_budget(tmp_path: Path) -> None:
    """Refused calls (anyone who reaches the port can make them) replace older refused rows
    only: the accepted calls recorded before the flood stay in the trail, and the table stays
    within its two budgets (plus one trim period and one batch)."""
    path = tmp_path / "state.db"
    store = Store(path)
    _calls(store, 20, accepted=True, tag="before")
    _calls(store, 5 * REFUSED_KEEP, accepted=False, tag="flood")
    store.flush_audit()
    kept = _kept(path)
    assert kept[1] == 20
    assert REFUSED_KEEP <= kept[0] <= REFUSED_KEEP + TRIM_EVERY + AUDIT_BATCH
    paths = [e["path"] for e in store.audit_tail(AUDIT_KEEP)]
    assert paths[:20] == [f"/api/v1/before/{i}" for i in range(20)]
    assert paths[-1] == f"/api/v1/flood/{5 * REFUSED_KEEP - 1}"  # the newest refusals kept
    store.close()


def test_accepted_calls_keep_the_newest_audit_keep(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    _calls(store, 10, accepted=False, tag="refused")
    _calls(store, AUDIT_KEEP + 3 * TRIM_EVERY, accepted=True, tag="ok")
    store.close()
    kept = _kept(path)
    assert AUDIT_KEEP <= kept[1] <= AUDIT_KEEP + TRIM_EVERY + AUDIT_BATCH
    assert kept[0] == 10  # the refused rows' budget is not the accepted ones'
    again = Store(path)
    oldest_ok = next(e for e in again.audit_tail(2 * AUDIT_KEEP) if "/ok/" in str(e["path"]))
    assert oldest_ok["path"] == f"/api/v1/ok/{AUDIT_KEEP + 3 * TRIM_EVERY - kept[1]}"
    again.close()

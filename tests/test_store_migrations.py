"""The store's migration list: a fresh database, an old one carried forward with its rows, a
newer one refused, and a failed step that leaves the database at a whole version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from supervisor.storage.store import SCHEMA_VERSION, Store, StoreError
from supervisor.storage.store import migrations as m
from supervisor.storage.store.audit import FIELDS


def columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def build_at(path: Path, version: int) -> None:
    """A database as an fsup of schema `version` left it."""
    db = sqlite3.connect(path, isolation_level=None)
    for step in m.MIGRATIONS[:version]:
        for statement in step.statements:
            db.execute(statement)
    db.execute(f"PRAGMA user_version={version}")
    db.close()


def test_versions_are_consecutive_from_one() -> None:
    assert [step.version for step in m.MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


def test_a_fresh_database_gets_every_table(tmp_path: Path) -> None:
    path = tmp_path / "fsup.db"
    Store(path).close()
    assert user_version(path) == SCHEMA_VERSION
    for table in ("formations", "versions", "audit", "searches", "runs", "results", "timeline"):
        assert columns(path, table), table
    assert {"auth", "authenticated"} <= columns(path, "audit")
    assert "scheme" not in columns(path, "audit")


def test_a_schema_3_database_keeps_its_audit_rows(tmp_path: Path) -> None:
    path = tmp_path / "fsup.db"
    build_at(path, 3)
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO audit (ts, key_id, method, path, status, duration_ms, remote_addr) "
            "VALUES ('2026-01-01T00:00:00Z', 'k', 'GET', '/rpc/formations', 200, 1.0, '::1')"
        )
    store = Store(path)
    try:
        (row,) = store.audit_tail(5)
    finally:
        store.close()
    assert row["path"] == "/rpc/formations" and row["auth"] == "hmac"  # the only scheme then
    assert user_version(path) == SCHEMA_VERSION


def insert_v4(db: sqlite3.Connection, key_id: str, scheme: str, status: int) -> None:
    db.execute(
        "INSERT INTO audit (ts, key_id, method, path, status, duration_ms, remote_addr, scheme) "
        "VALUES ('2026-01-01T00:00:00Z', ?, 'POST', '/rpc/formations/a/stop', ?, 1.0, "
        "'127.0.0.1', ?)",
        (key_id, status, scheme),
    )


def test_schema_5_names_the_auth_as_the_contract_and_keeps_refusals_apart(
    tmp_path: Path,
) -> None:
    """Schema 4 stored `signed-headers`, `muxi-hmac` or nothing; schema 5 reads them back
    under the contract's `auth` names, and marks the 401s as refused (their own budget)."""
    path = tmp_path / "fsup.db"
    build_at(path, 4)
    with sqlite3.connect(path) as db:
        insert_v4(db, "k", "signed-headers", 200)
        insert_v4(db, "k", "muxi-hmac", 409)
        insert_v4(db, "", "", 401)  # unsigned
        insert_v4(db, "intruder", "signed-headers", 401)
    store = Store(path)
    try:
        rows = store.audit_tail(10)
    finally:
        store.close()
    assert [(r["key_id"], r["auth"], r["status"]) for r in rows] == [
        ("k", "hmac", 200),
        ("k", "muxi-hmac", 409),
        ("", "", 401),
        ("intruder", "hmac", 401),
    ]
    assert all(set(r) == set(FIELDS) for r in rows)  # the contract's shape, nothing more
    with sqlite3.connect(path) as db:
        flags = [f for (f,) in db.execute("SELECT authenticated FROM audit ORDER BY id")]
    assert flags == [1, 1, 0, 0]


def test_a_newer_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "fsup.db"
    build_at(path, SCHEMA_VERSION)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer fsup"):
        Store(path)
    assert user_version(path) == SCHEMA_VERSION + 1


def test_a_failed_step_leaves_the_previous_whole_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fsup.db"
    broken = m.Migration(2, "half of it works", ("CREATE TABLE half (x)", "NOT SQL AT ALL"))
    monkeypatch.setattr(m, "MIGRATIONS", (m.MIGRATIONS[0], broken))
    with pytest.raises(sqlite3.OperationalError):
        Store(path)
    assert user_version(path) == 1
    assert columns(path, "half") == set()  # the step's first statement was rolled back too


def test_schema_6_marks_no_formation_as_being_deleted(tmp_path: Path) -> None:
    """A schema 5 database's formations come through as not being deleted; a marked one is
    read back marked (and desired `stopped`), for the next start to resume its delete."""
    path = tmp_path / "fsup.db"
    build_at(path, 5)
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO formations (id, port, desired, current_version, created_at, updated_at) "
            "VALUES ('web', 20100, 'running', '1.0.0', 't', 't')"
        )
    store = Store(path)
    try:
        assert user_version(path) == SCHEMA_VERSION >= 6
        row = store.formation("web")
        assert row is not None and row.deleting is False and row.desired == "running"
        store.mark_deleting("web")
        row = store.formation("web")
        assert row is not None and row.deleting is True and row.desired == "stopped"
        assert [r.deleting for r in store.formations()] == [True]
    finally:
        store.close()


def test_schema_7_gives_each_formation_an_empty_timeline_deleted_with_it(tmp_path: Path) -> None:
    """A schema 6 database's formations come through with empty timelines; one written
    after the upgrade is read back, and goes with its formation."""
    path = tmp_path / "fsup.db"
    build_at(path, 6)
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO formations (id, port, desired, current_version, created_at, updated_at) "
            "VALUES ('web', 20100, 'running', '1.0.0', 't', 't')"
        )
    store = Store(path)
    try:
        assert user_version(path) == SCHEMA_VERSION >= 7
        assert columns(path, "timeline") == {"id", "formation_id", "envelope"}
        assert store.timeline("web", 10) == []
        store.record_event("web", '{"type": "formation_state_changed", "data": {}}')
        assert [e["type"] for e in store.timeline("web", 10)] == ["formation_state_changed"]
        store.delete_formation("web")
        assert store.timeline("web", 10) == []
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM timeline").fetchone()[0] == 0
    finally:
        store.close()

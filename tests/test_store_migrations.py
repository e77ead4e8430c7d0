"""The store's migration list: a fresh database, an old one carried forward with its rows, a
newer one refused, and a failed step that leaves the database at a whole version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from supervisor.storage.store import SCHEMA_VERSION, Store, StoreError
from supervisor.storage.store import migrations as m


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
    for table in ("formations", "versions", "audit", "searches", "runs", "results"):
        assert columns(path, table), table
    assert "scheme" in columns(path, "audit")


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
    assert row["path"] == "/rpc/formations" and row["scheme"] == ""
    assert user_version(path) == SCHEMA_VERSION


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

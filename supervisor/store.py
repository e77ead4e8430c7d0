"""The embedded SQLite store: what must survive a restart of fsup.

Formations, their versions and desired state, and the pid of each live process (with its
start time, so a recycled pid is never mistaken for ours). Calls are synchronous: each is a
sub-millisecond statement on a local WAL database, made from the trio thread that owns the one
connection, so no thread hopping is needed and writes are naturally serialized.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FsupError
from .timestamps import rfc3339_now
from .version_order import ordered

SCHEMA_VERSION = 4
SCHEMA = """
CREATE TABLE IF NOT EXISTS formations (
    id              TEXT PRIMARY KEY,
    port            INTEGER NOT NULL,
    desired         TEXT NOT NULL CHECK (desired IN ('running', 'stopped')),
    current_version TEXT NOT NULL,
    pid             INTEGER,
    pid_started     REAL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    formation_id TEXT NOT NULL REFERENCES formations(id) ON DELETE CASCADE,
    version      TEXT NOT NULL,
    manifest     BLOB NOT NULL,
    path         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (formation_id, version)
);
CREATE TABLE IF NOT EXISTS searches (
    id            TEXT PRIMARY KEY,
    keyword       TEXT NOT NULL,
    state         TEXT NOT NULL,
    mode          TEXT NOT NULL,
    pinned        INTEGER NOT NULL DEFAULT 0,
    active_run_id TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    search_id   TEXT NOT NULL REFERENCES searches(id) ON DELETE CASCADE,
    mode        TEXT NOT NULL,
    state       TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    telemetry   TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS results (
    search_id  TEXT NOT NULL REFERENCES searches(id) ON DELETE CASCADE,
    result_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    title      TEXT NOT NULL,
    sources    TEXT NOT NULL,
    snippet    TEXT,
    size       INTEGER,
    score      REAL,
    first_seen TEXT NOT NULL,
    PRIMARY KEY (search_id, result_id)
);
CREATE TABLE IF NOT EXISTS audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    remote_addr TEXT NOT NULL,
    scheme      TEXT NOT NULL DEFAULT ''
);
"""
# How search results can be sorted, as SQL.
RESULT_ORDERS = {
    "sources": "json_array_length(sources) DESC, first_seen",
    "size": "size IS NULL, size DESC, first_seen",
    "score": "score IS NULL, score DESC, first_seen",
    "recent": "first_seen DESC, rowid DESC",
}
# Audit rows kept (the oldest are dropped beyond this).
AUDIT_KEEP = 10_000


@dataclass(frozen=True)
class FormationRow:
    id: str
    port: int
    desired: str
    current_version: str
    pid: int | None
    pid_started: float | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class VersionRow:
    formation_id: str
    version: str
    manifest: bytes
    path: str
    created_at: str


class StoreError(Exception):
    """The database file is unusable (newer schema, corrupt)."""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer fsup (schema {version}); upgrade fsup"
            )
        if version == SCHEMA_VERSION:
            return
        # executescript commits on its own; the statements are idempotent, so a crash
        # between them and the version bump just repeats them on the next start.
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(audit)")}
        if "scheme" not in columns:  # schema 3 and before: no MUXI-HMAC scheme yet
            self._db.execute("ALTER TABLE audit ADD COLUMN scheme TEXT NOT NULL DEFAULT ''")
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # -- formations ------------------------------------------------------------------------

    def insert_formation(self, formation_id: str, port: int, version: VersionRow) -> FormationRow:
        """A new formation, desired `stopped` until its first start says otherwise (so an fsup
        killed mid-deploy does not bring back a formation that never proved healthy)."""
        now = rfc3339_now()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO formations (id, port, desired, current_version, created_at, "
                "updated_at) VALUES (?, ?, 'stopped', ?, ?, ?)",
                (formation_id, port, version.version, now, now),
            )
            self._insert_version(db, version)
        row = self.formation(formation_id)
        assert row is not None
        return row

    def formation(self, formation_id: str) -> FormationRow | None:
        row = self._db.execute(
            "SELECT id, port, desired, current_version, pid, pid_started, created_at, "
            "updated_at FROM formations WHERE id = ?",
            (formation_id,),
        ).fetchone()
        return FormationRow(*row) if row else None

    def formations(self) -> list[FormationRow]:
        rows = self._db.execute(
            "SELECT id, port, desired, current_version, pid, pid_started, created_at, "
            "updated_at FROM formations ORDER BY created_at, id"
        ).fetchall()
        return [FormationRow(*row) for row in rows]

    def set_desired(self, formation_id: str, desired: str) -> None:
        self._update(formation_id, "desired = ?", desired)

    def set_process(self, formation_id: str, pid: int | None, started: float | None) -> None:
        """Record (or clear) the live process, before anything else can observe it."""
        with self.transaction() as db:
            db.execute(
                "UPDATE formations SET pid = ?, pid_started = ? WHERE id = ?",
                (pid, started, formation_id),
            )

    def delete_formation(self, formation_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM formations WHERE id = ?", (formation_id,))

    def _update(self, formation_id: str, assignment: str, value: object) -> None:
        with self.transaction() as db:
            db.execute(
                f"UPDATE formations SET {assignment}, updated_at = ? WHERE id = ?",  # noqa: S608
                (value, rfc3339_now(), formation_id),
            )

    # -- audit -----------------------------------------------------------------------------

    def record_audit(
        self,
        key_id: str,
        method: str,
        path: str,
        status: int,
        duration_ms: float,
        remote: str,
        scheme: str = "",
    ) -> None:
        """`scheme`: the signing scheme the request used (empty when it used none)."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO audit (ts, key_id, method, path, status, duration_ms, remote_addr, "
                "scheme) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (rfc3339_now(), key_id, method, path, status, duration_ms, remote, scheme),
            )
            row_id = cursor.lastrowid or 0
            if row_id % 500 == 0:
                db.execute("DELETE FROM audit WHERE id <= ?", (row_id - AUDIT_KEEP,))

    def audit_tail(self, count: int) -> list[dict[str, object]]:
        rows = self._db.execute(
            "SELECT ts, key_id, method, path, status, duration_ms, remote_addr, scheme "
            "FROM audit ORDER BY id DESC LIMIT ?",
            (count,),
        ).fetchall()
        names = ("ts", "key_id", "method", "path", "status", "duration_ms", "remote_addr", "scheme")
        return [dict(zip(names, row, strict=True)) for row in reversed(rows)]

    # -- versions --------------------------------------------------------------------------

    @staticmethod
    def _insert_version(db: sqlite3.Connection, version: VersionRow) -> None:
        db.execute(
            "INSERT INTO versions (formation_id, version, manifest, path, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                version.formation_id,
                version.version,
                version.manifest,
                version.path,
                version.created_at,
            ),
        )

    def put_version(self, version: VersionRow) -> None:
        """Add a version, or replace an earlier install of the same one."""
        with self.transaction() as db:
            db.execute(
                "DELETE FROM versions WHERE formation_id = ? AND version = ?",
                (version.formation_id, version.version),
            )
            self._insert_version(db, version)

    def delete_version(self, formation_id: str, version: str) -> None:
        with self.transaction() as db:
            db.execute(
                "DELETE FROM versions WHERE formation_id = ? AND version = ?",
                (formation_id, version),
            )

    def set_current(
        self, formation_id: str, version: str, port: int, pid: int | None, started: float | None
    ) -> None:
        """The swap, in one transaction: the version and process now serving, on their port."""
        with self.transaction() as db:
            db.execute(
                "UPDATE formations SET current_version = ?, port = ?, pid = ?, pid_started = ?, "
                "updated_at = ? WHERE id = ?",
                (version, port, pid, started, rfc3339_now(), formation_id),
            )

    def versions(self, formation_id: str) -> list[VersionRow]:
        """A formation's stored versions, lowest first by SemVer precedence (equal ones, i.e.
        builds of one version, oldest stored first)."""
        rows = [
            VersionRow(*row)
            for row in self._db.execute(
                "SELECT formation_id, version, manifest, path, created_at FROM versions "
                "WHERE formation_id = ? ORDER BY created_at, rowid",
                (formation_id,),
            ).fetchall()
        ]
        rank = {version: index for index, version in enumerate(ordered(r.version for r in rows))}
        return sorted(rows, key=lambda row: rank[row.version])

    def version(self, formation_id: str, version: str) -> VersionRow | None:
        row = self._db.execute(
            "SELECT formation_id, version, manifest, path, created_at FROM versions "
            "WHERE formation_id = ? AND version = ?",
            (formation_id, version),
        ).fetchone()
        return VersionRow(*row) if row else None


class SearchStore:
    """Searches, their runs and results, on the same database (see `Store`)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._db = store._db  # noqa: SLF001 - one connection, shared by design

    def insert_search(self, search_id: str, keyword: str, mode: str) -> None:
        now = rfc3339_now()
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO searches (id, keyword, state, mode, created_at, updated_at) "
                "VALUES (?, ?, 'idle', ?, ?, ?)",
                (search_id, keyword, mode, now, now),
            )

    def search(self, search_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT id, keyword, state, mode, pinned, active_run_id, created_at, updated_at "
            "FROM searches WHERE id = ?",
            (search_id,),
        ).fetchone()
        return _search_dict(row) if row else None

    def searches(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT id, keyword, state, mode, pinned, active_run_id, created_at, updated_at "
            "FROM searches ORDER BY pinned DESC, updated_at DESC, id"
        ).fetchall()
        return [_search_dict(row) for row in rows]

    def update_search(self, search_id: str, **fields: Any) -> None:
        allowed = {"keyword", "state", "mode", "pinned", "active_run_id"}
        assert set(fields) <= allowed, fields
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._store.transaction() as db:
            db.execute(
                f"UPDATE searches SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608
                (*fields.values(), rfc3339_now(), search_id),
            )

    def delete_search(self, search_id: str) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM searches WHERE id = ?", (search_id,))

    def insert_run(self, run_id: str, search_id: str, mode: str) -> None:
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO runs (id, search_id, mode, state, started_at) "
                "VALUES (?, ?, ?, 'running', ?)",
                (run_id, search_id, mode, rfc3339_now()),
            )

    def update_run(
        self, run_id: str, state: str, telemetry: dict[str, Any], finished: bool = False
    ) -> None:
        with self._store.transaction() as db:
            db.execute(
                "UPDATE runs SET state = ?, telemetry = ?, finished_at = "
                "CASE WHEN ? THEN ? ELSE finished_at END WHERE id = ?",
                (state, json.dumps(telemetry), finished, rfc3339_now(), run_id),
            )

    def last_run(self, search_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT id, mode, state, started_at, finished_at, telemetry FROM runs "
            "WHERE search_id = ? ORDER BY started_at DESC, rowid DESC LIMIT 1",
            (search_id,),
        ).fetchone()
        if row is None:
            return None
        names = ("id", "mode", "state", "started_at", "finished_at")
        return {**dict(zip(names, row[:5], strict=True)), "telemetry": json.loads(row[5])}

    def interrupted_runs(self) -> list[tuple[str, str]]:
        """Runs still marked running (fsup stopped under them): (run id, search id)."""
        return self._db.execute("SELECT id, search_id FROM runs WHERE state = 'running'").fetchall()

    def upsert_result(self, search_id: str, result: dict[str, Any]) -> bool:
        """Add a hit, or add its source to an existing one; True when it is new."""
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT sources FROM results WHERE search_id = ? AND result_id = ?",
                (search_id, result["result_id"]),
            ).fetchone()
            if row is not None:
                sources = json.loads(row[0])
                if not set(result["sources"]) - set(sources):
                    return False
                merged = sorted(set(sources) | set(result["sources"]))
                db.execute(
                    "UPDATE results SET sources = ? WHERE search_id = ? AND result_id = ?",
                    (json.dumps(merged), search_id, result["result_id"]),
                )
                return False
            db.execute(
                "INSERT INTO results (search_id, result_id, kind, title, sources, snippet, size, "
                "score, first_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    search_id,
                    result["result_id"],
                    result["kind"],
                    result["title"],
                    json.dumps(sorted(result["sources"])),
                    result.get("snippet"),
                    result.get("size"),
                    result.get("score"),
                    rfc3339_now(),
                ),
            )
            return True

    def results(
        self, search_id: str, limit: int, offset: int, sort: str, q: str | None
    ) -> tuple[list[dict[str, Any]], int]:
        order = RESULT_ORDERS.get(sort)
        if order is None:  # the HTTP layer checks first; a caller that does not gets a 400
            raise FsupError(
                "INVALID_REQUEST",
                f"sort must be one of {', '.join(RESULT_ORDERS)}",
                {"parameter": "sort"},
            )
        where, params = "search_id = ?", [search_id]
        if q:
            where += (
                " AND (instr(lower(title), ?) > 0 OR instr(lower(coalesce(snippet, '')), ?) > 0)"
            )
            params += [q.lower(), q.lower()]
        (total,) = self._db.execute(
            f"SELECT count(*) FROM results WHERE {where}",
            params,  # noqa: S608
        ).fetchone()
        rows = self._db.execute(
            "SELECT result_id, kind, title, sources, snippet, size, score, first_seen FROM "
            f"results WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",  # noqa: S608
            (*params, limit, offset),
        ).fetchall()
        return [_result_dict(row) for row in rows], total

    def result(self, search_id: str, result_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT result_id, kind, title, sources, snippet, size, score, first_seen FROM "
            "results WHERE search_id = ? AND result_id = ?",
            (search_id, result_id),
        ).fetchone()
        return _result_dict(row) if row else None

    def clear_results(self, search_id: str) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM results WHERE search_id = ?", (search_id,))


def _search_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    names = (
        "id",
        "keyword",
        "state",
        "mode",
        "pinned",
        "active_run_id",
        "created_at",
        "updated_at",
    )
    search = dict(zip(names, row, strict=True))
    search["pinned"] = bool(search["pinned"])
    return search


def _result_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    names = ("result_id", "kind", "title", "sources", "snippet", "size", "score", "first_seen")
    result = dict(zip(names, row, strict=True))
    result["sources"] = json.loads(result["sources"])
    return {k: v for k, v in result.items() if v is not None or k in ("result_id", "title")}

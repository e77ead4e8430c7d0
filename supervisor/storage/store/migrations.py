"""The store's schema, as the list of steps that built it: one entry per schema version.

A database at `user_version` N gets the steps after N, each in its own transaction together
with its version bump (SQLite's DDL is transactional), so a crash mid-upgrade leaves the
database at a whole version and the next start carries on from there. A database newer than
the last step is refused: an older fsup must not write a schema it does not know.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    what: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "formations and their versions",
        (
            """CREATE TABLE IF NOT EXISTS formations (
                id              TEXT PRIMARY KEY,
                port            INTEGER NOT NULL,
                desired         TEXT NOT NULL CHECK (desired IN ('running', 'stopped')),
                current_version TEXT NOT NULL,
                pid             INTEGER,
                pid_started     REAL,
                created_at      TEXT NOT NULL,
                updated_at      TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS versions (
                formation_id TEXT NOT NULL REFERENCES formations(id) ON DELETE CASCADE,
                version      TEXT NOT NULL,
                manifest     BLOB NOT NULL,
                path         TEXT NOT NULL,
                created_at   TEXT NOT NULL,
                PRIMARY KEY (formation_id, version)
            )""",
        ),
    ),
    Migration(
        2,
        "the audit trail of /rpc calls",
        (
            """CREATE TABLE IF NOT EXISTS audit (
                id          INTEGER PRIMARY KEY AUTOINCREMENT,
                ts          TEXT NOT NULL,
                key_id      TEXT NOT NULL,
                method      TEXT NOT NULL,
                path        TEXT NOT NULL,
                status      INTEGER NOT NULL,
                duration_ms REAL NOT NULL,
                remote_addr TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        3,
        "searches, their runs and results (seed 003)",
        (
            """CREATE TABLE IF NOT EXISTS searches (
                id            TEXT PRIMARY KEY,
                keyword       TEXT NOT NULL,
                state         TEXT NOT NULL,
                mode          TEXT NOT NULL,
                pinned        INTEGER NOT NULL DEFAULT 0,
                active_run_id TEXT,
                created_at    TEXT NOT NULL,
                updated_at    TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS runs (
                id          TEXT PRIMARY KEY,
                search_id   TEXT NOT NULL REFERENCES searches(id) ON DELETE CASCADE,
                mode        TEXT NOT NULL,
                state       TEXT NOT NULL,
                started_at  TEXT NOT NULL,
                finished_at TEXT,
                telemetry   TEXT NOT NULL DEFAULT '{}'
            )""",
            """CREATE TABLE IF NOT EXISTS results (
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
            )""",
        ),
    ),
    Migration(
        4,
        "the signing scheme of each audited call (MUXI-HMAC beside the seed's headers)",
        ("ALTER TABLE audit ADD COLUMN scheme TEXT NOT NULL DEFAULT ''",),
    ),
    Migration(
        5,
        "every control path audited: `auth` (hmac, muxi-hmac, bearer, session) for `scheme`, "
        "and whether the credentials were accepted (the refused calls' own budget)",
        (
            "ALTER TABLE audit RENAME COLUMN scheme TO auth",
            # The seed's scheme is `hmac` in the contract. A row older than schema 4 that
            # names a key id can only have used it (MUXI-HMAC came with schema 4; from then
            # on a row with a key id and no scheme cannot be written).
            "UPDATE audit SET auth = 'hmac' "
            "WHERE auth = 'signed-headers' OR (auth = '' AND key_id <> '')",
            "ALTER TABLE audit ADD COLUMN authenticated INTEGER NOT NULL DEFAULT 1",
            # Until now only `/rpc` was audited, where a refused signature is the one 401.
            "UPDATE audit SET authenticated = 0 WHERE status = 401",
        ),
    ),
    Migration(
        6,
        "a formation's accepted delete (`deleting`), so that a restart of fsup resumes it",
        ("ALTER TABLE formations ADD COLUMN deleting INTEGER NOT NULL DEFAULT 0",),
    ),
    Migration(
        7,
        "a timeline per formation: its `formation_*` event envelopes, deleted with it",
        (
            """CREATE TABLE IF NOT EXISTS timeline (
                id           INTEGER PRIMARY KEY AUTOINCREMENT,
                formation_id TEXT NOT NULL REFERENCES formations(id) ON DELETE CASCADE,
                envelope     TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS timeline_by_formation ON timeline (formation_id, id)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


class StoreError(Exception):
    """The database file is unusable (newer schema, corrupt)."""


def migrate(db: sqlite3.Connection, name: str) -> None:
    """Bring `db` (in autocommit mode) to `SCHEMA_VERSION`; `name` is for the error only."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(f"{name} was written by a newer fsup (schema {version}); upgrade fsup")
    for step in MIGRATIONS:
        if step.version <= version:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in step.statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={step.version}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

"""Formations and their versions: the rows that say what fsup runs, and what it ran.

A formation's desired state and its live process (with its start time, so a recycled pid is
never mistaken for ours); each version's manifest and folder.

Reads of one formation (its row, its versions) are answered from memory once read: every
listing asks them for each formation (issue 11: two queries per formation per `GET
/rpc/formations`), and only this process writes them, through the methods below, each of
which forgets what it changes. A rolled-back write is forgotten too (the next read asks the
database again).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.core.timestamps import rfc3339_now
from supervisor.core.version_order import ordered
from supervisor.storage.store.database import Database


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
    # A delete was accepted (and not finished when fsup last stopped): a restore resumes it.
    deleting: bool = False


@dataclass(frozen=True)
class VersionRow:
    formation_id: str
    version: str
    manifest: bytes
    path: str
    created_at: str


_COLUMNS = "id, port, desired, current_version, pid, pid_started, created_at, updated_at, deleting"


def _row(row: tuple[Any, ...]) -> FormationRow:
    fid, port, desired, current, pid, started, created, updated, deleting = row
    return FormationRow(fid, port, desired, current, pid, started, created, updated, bool(deleting))


class FormationRecords(Database):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._rows: dict[str, FormationRow | None] = {}
        self._versions: dict[str, tuple[VersionRow, ...]] = {}

    @contextmanager
    def _writing(self, formation_id: str) -> Iterator[sqlite3.Connection]:
        """A transaction that changes `formation_id`'s rows: what is remembered of it is
        forgotten, whether the transaction commits or not."""
        try:
            with self.transaction() as db:
                yield db
        finally:
            self._rows.pop(formation_id, None)
            self._versions.pop(formation_id, None)

    # -- formations ------------------------------------------------------------------------

    def insert_formation(self, formation_id: str, port: int, version: VersionRow) -> FormationRow:
        """A new formation, desired `stopped` until its first start says otherwise (so an fsup
        killed mid-deploy does not bring back a formation that never proved healthy)."""
        now = rfc3339_now()
        with self._writing(formation_id) as db:
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
        if formation_id in self._rows:
            return self._rows[formation_id]
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM formations WHERE id = ?",  # noqa: S608
            (formation_id,),
        ).fetchone()
        found = self._rows[formation_id] = _row(row) if row else None
        return found

    def formations(self) -> list[FormationRow]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM formations ORDER BY created_at, id"  # noqa: S608
        ).fetchall()
        return [_row(row) for row in rows]

    def set_desired(self, formation_id: str, desired: str) -> None:
        self._update(formation_id, "desired = ?", desired)

    def mark_deleting(self, formation_id: str) -> None:
        """Record an accepted delete, before it begins: an fsup killed during it resumes it on
        its next start instead of bringing the formation back (desired `stopped` too, so that
        nothing restored spawns it meanwhile)."""
        with self._writing(formation_id) as db:
            db.execute(
                "UPDATE formations SET deleting = 1, desired = 'stopped', updated_at = ? "
                "WHERE id = ?",
                (rfc3339_now(), formation_id),
            )

    def set_process(self, formation_id: str, pid: int | None, started: float | None) -> None:
        """Record (or clear) the live process, before anything else can observe it."""
        with self._writing(formation_id) as db:
            db.execute(
                "UPDATE formations SET pid = ?, pid_started = ? WHERE id = ?",
                (pid, started, formation_id),
            )

    def delete_formation(self, formation_id: str) -> None:
        with self._writing(formation_id) as db:
            db.execute("DELETE FROM formations WHERE id = ?", (formation_id,))

    def _update(self, formation_id: str, assignment: str, value: object) -> None:
        with self._writing(formation_id) as db:
            db.execute(
                f"UPDATE formations SET {assignment}, updated_at = ? WHERE id = ?",  # noqa: S608
                (value, rfc3339_now(), formation_id),
            )

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
        with self._writing(version.formation_id) as db:
            db.execute(
                "DELETE FROM versions WHERE formation_id = ? AND version = ?",
                (version.formation_id, version.version),
            )
            self._insert_version(db, version)

    def delete_version(self, formation_id: str, version: str) -> None:
        with self._writing(formation_id) as db:
            db.execute(
                "DELETE FROM versions WHERE formation_id = ? AND version = ?",
                (formation_id, version),
            )

    def set_current(
        self, formation_id: str, version: str, port: int, pid: int | None, started: float | None
    ) -> None:
        """The swap, in one transaction: the version and process now serving, on their port."""
        with self._writing(formation_id) as db:
            db.execute(
                "UPDATE formations SET current_version = ?, port = ?, pid = ?, pid_started = ?, "
                "updated_at = ? WHERE id = ?",
                (version, port, pid, started, rfc3339_now(), formation_id),
            )

    def versions(self, formation_id: str) -> list[VersionRow]:
        """A formation's stored versions, lowest first by SemVer precedence (equal ones, i.e.
        builds of one version, oldest stored first)."""
        known = self._versions.get(formation_id)
        if known is not None:
            return list(known)
        rows = [
            VersionRow(*row)
            for row in self._db.execute(
                "SELECT formation_id, version, manifest, path, created_at FROM versions "
                "WHERE formation_id = ? ORDER BY created_at, rowid",
                (formation_id,),
            ).fetchall()
        ]
        rank = {version: index for index, version in enumerate(ordered(r.version for r in rows))}
        found = sorted(rows, key=lambda row: rank[row.version])
        self._versions[formation_id] = tuple(found)
        return found

    def version(self, formation_id: str, version: str) -> VersionRow | None:
        row = self._db.execute(
            "SELECT formation_id, version, manifest, path, created_at FROM versions "
            "WHERE formation_id = ? AND version = ?",
            (formation_id, version),
        ).fetchone()
        return VersionRow(*row) if row else None

"""Searches (seed 003), their runs and results, on the store's one connection.

A search's or a run's state changes only through `move_search`, `delete_search` and `end_run`,
which check the move against `supervisor.core.search_states` in the transaction that makes it;
rows read back carry the states as `SearchState` and `RunState`.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from supervisor.core.errors import FsupError
from supervisor.core.search_states import (
    RunState,
    SearchState,
    check_run_transition,
    check_transition,
)
from supervisor.core.timestamps import rfc3339_now
from supervisor.storage.store.database import Database

# How search results can be sorted, as SQL.
RESULT_ORDERS = {
    "sources": "json_array_length(sources) DESC, first_seen",
    "size": "size IS NULL, size DESC, first_seen",
    "score": "score IS NULL, score DESC, first_seen",
    "recent": "first_seen DESC, rowid DESC",
}


class SearchStore:
    """Searches, their runs and results, on the same database (see `Store`)."""

    def __init__(self, store: Database) -> None:
        self._store = store
        self._db = store.connection  # one connection, shared by design

    def insert_search(self, search_id: str, keyword: str, mode: str) -> None:
        now = rfc3339_now()
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO searches (id, keyword, state, mode, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (search_id, keyword, SearchState.IDLE.value, mode, now, now),
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
        """Change what is not the state (that is `move_search`)."""
        allowed = {"keyword", "mode", "pinned", "active_run_id"}
        assert set(fields) <= allowed, fields
        with self._store.transaction() as db:
            _update_search(db, search_id, fields)

    def move_search(self, search_id: str, state: SearchState, **fields: Any) -> None:
        """Put a search in `state` (with `fields`, as `update_search`), a move checked against
        the one it is in. A search gone meanwhile is left gone."""
        assert set(fields) <= {"mode", "active_run_id"}, fields
        with self._store.transaction() as db:
            old = _search_state(db, search_id)
            if old is None:
                return
            if old is not state:
                check_transition(old, state)
            _update_search(db, search_id, {"state": state.value, **fields})

    def delete_search(self, search_id: str) -> None:
        """Delete a search with its runs and results (`SearchState.DELETED`, checked)."""
        with self._store.transaction() as db:
            old = _search_state(db, search_id)
            if old is None:
                return
            check_transition(old, SearchState.DELETED)
            db.execute("DELETE FROM searches WHERE id = ?", (search_id,))

    def insert_run(self, run_id: str, search_id: str, mode: str) -> None:
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO runs (id, search_id, mode, state, started_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, search_id, mode, RunState.RUNNING.value, rfc3339_now()),
            )

    def run_state(self, run_id: str) -> RunState | None:
        """The state a run is in; None once its search is deleted (its runs with it)."""
        return _run_state(self._db, run_id)

    def record_progress(self, run_id: str, telemetry: dict[str, Any]) -> None:
        """A run's latest telemetry; its state is left as it is."""
        with self._store.transaction() as db:
            db.execute(
                "UPDATE runs SET telemetry = ? WHERE id = ?", (json.dumps(telemetry), run_id)
            )

    def end_run(self, run_id: str, state: RunState, telemetry: dict[str, Any]) -> None:
        """End a run in `state` with its last telemetry, a move checked against the state it is
        in. Ending it again in the same state (a run's own last word after the registry stopped
        it) only writes the telemetry and the time anew. A run gone with its search is left."""
        with self._store.transaction() as db:
            old = _run_state(db, run_id)
            if old is None:
                return
            if old is not state:
                check_run_transition(old, state)
            db.execute(
                "UPDATE runs SET state = ?, telemetry = ?, finished_at = ? WHERE id = ?",
                (state.value, json.dumps(telemetry), rfc3339_now(), run_id),
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
        run = dict(zip(names, row[:5], strict=True))
        return {**run, "state": RunState(run["state"]), "telemetry": json.loads(row[5])}

    def interrupted_runs(self) -> list[tuple[str, str]]:
        """Runs still marked running (fsup stopped under them): (run id, search id)."""
        return self._db.execute(
            "SELECT id, search_id FROM runs WHERE state = ?", (RunState.RUNNING.value,)
        ).fetchall()

    def upsert_result(self, search_id: str, result: dict[str, Any]) -> bool:
        """Add a hit, or add its source to an existing one; True when it is new. A hit for a
        search deleted meanwhile (a run's report still in its mailbox when the delete came)
        finds nothing to add to: False."""
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT results.sources FROM searches LEFT JOIN results ON results.search_id "
                "= searches.id AND results.result_id = ? WHERE searches.id = ?",
                (result["result_id"], search_id),
            ).fetchone()
            if row is None:
                return False
            if row[0] is not None:
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
    search["state"] = SearchState(search["state"])
    return search


def _search_state(db: sqlite3.Connection, search_id: str) -> SearchState | None:
    row = db.execute("SELECT state FROM searches WHERE id = ?", (search_id,)).fetchone()
    return None if row is None else SearchState(row[0])


def _run_state(db: sqlite3.Connection, run_id: str) -> RunState | None:
    row = db.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else RunState(row[0])


def _update_search(db: sqlite3.Connection, search_id: str, fields: dict[str, Any]) -> None:
    assignments = ", ".join(f"{name} = ?" for name in fields)
    db.execute(
        f"UPDATE searches SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608
        (*fields.values(), rfc3339_now(), search_id),
    )


def _result_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    names = ("result_id", "kind", "title", "sources", "snippet", "size", "score", "first_seen")
    result = dict(zip(names, row, strict=True))
    result["sources"] = json.loads(result["sources"])
    return {k: v for k, v in result.items() if v is not None or k in ("result_id", "title")}

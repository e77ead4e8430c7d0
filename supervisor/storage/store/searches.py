"""Searches (seed 003), their runs and results, on the store's one connection."""

from __future__ import annotations

import json
from typing import Any

from supervisor.core.errors import FsupError
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

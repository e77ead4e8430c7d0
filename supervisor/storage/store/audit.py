"""The audit trail: one row per `/rpc` call, refused ones included, the newest kept.

Rows are buffered in memory and written in batches, one transaction per batch: a
transaction per call was the largest single cost of a signed `GET` (issue 11). A batch is
written when `AUDIT_BATCH` rows wait, when the server's flusher ticks (every
`AUDIT_FLUSH_S`), before the trail is read (`audit_tail` sees every call made before it),
and on `close` (a clean stop loses nothing). What a crash (SIGKILL, power loss) can lose is
the rows of the last `AUDIT_FLUSH_S` at most (docs/decisions.md). Each row's timestamp is
taken when the call is recorded, not when it is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from supervisor.core.timestamps import rfc3339_now
from supervisor.storage.store.database import Database

# Audit rows kept (the oldest are dropped beyond this).
AUDIT_KEEP = 10_000
# Rows that wait for the next write at most, and how often the server writes them anyway.
AUDIT_BATCH = 256
AUDIT_FLUSH_S = 0.25
# The oldest rows are dropped each time the row id passes a multiple of this.
_TRIM_EVERY = 500

_Row = tuple[str, str, str, str, int, float, str, str]


class AuditTrail(Database):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._audit_pending: list[_Row] = []
        # Called when a first row starts waiting: the server's flusher wakes for it (and
        # sleeps while no call is made, so an idle fsup does not wake for the audit).
        self.audit_waiting: Callable[[], None] | None = None

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
        row = (rfc3339_now(), key_id, method, path, status, duration_ms, remote, scheme)
        self._audit_pending.append(row)
        if len(self._audit_pending) >= AUDIT_BATCH:
            self.flush_audit()
        elif len(self._audit_pending) == 1 and self.audit_waiting is not None:
            self.audit_waiting()

    def flush_audit(self) -> int:
        """Write the buffered rows in one transaction; how many were written."""
        rows = self._audit_pending
        if not rows:
            return 0
        self._audit_pending = []
        try:
            with self.transaction() as db:
                db.executemany(
                    "INSERT INTO audit (ts, key_id, method, path, status, duration_ms, "
                    "remote_addr, scheme) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                last = db.execute("SELECT MAX(id) FROM audit").fetchone()[0]
                first = last - len(rows) + 1
                if last // _TRIM_EVERY != (first - 1) // _TRIM_EVERY:  # passed a multiple
                    db.execute("DELETE FROM audit WHERE id <= ?", (last - AUDIT_KEEP,))
        except BaseException:
            # Kept for the next write (a busy database), newest `AUDIT_KEEP` at most.
            self._audit_pending = (rows + self._audit_pending)[-AUDIT_KEEP:]
            raise
        return len(rows)

    def audit_tail(self, count: int) -> list[dict[str, object]]:
        self.flush_audit()
        rows = self._db.execute(
            "SELECT ts, key_id, method, path, status, duration_ms, remote_addr, scheme "
            "FROM audit ORDER BY id DESC LIMIT ?",
            (count,),
        ).fetchall()
        names = ("ts", "key_id", "method", "path", "status", "duration_ms", "remote_addr", "scheme")
        return [dict(zip(names, row, strict=True)) for row in reversed(rows)]

    def close(self) -> None:
        """Write what is buffered, then close the connection (a clean stop loses no row)."""
        try:
            self.flush_audit()
        finally:
            super().close()

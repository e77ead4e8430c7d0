"""The audit trail: one row per call that changes something (and per `/rpc` call), refused
ones included, the newest kept.

Rows are buffered in memory and written in batches, one transaction per batch: a
transaction per call was the largest single cost of a signed `GET` (issue 11). A batch is
written when `AUDIT_BATCH` rows wait, when the server's flusher ticks (every
`AUDIT_FLUSH_S`), before the trail is read (`audit_tail` sees every call made before it),
and on `close` (a clean stop loses nothing). What a crash (SIGKILL, power loss) can lose is
the rows of the last `AUDIT_FLUSH_S` at most (docs/decisions.md). Each row's timestamp is
taken when the call is recorded, not when it is written.

Two budgets bound the table: the newest `AUDIT_KEEP` calls whose credentials fsup accepted,
and the newest `REFUSED_KEEP` of the others (no credentials, wrong ones, or refused before
they were checked). Anyone who can reach the port can make refused calls, so a flood of them
only replaces older refused rows: it can neither grow the table without bound nor push the
record of the accepted calls out of it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from supervisor.core.timestamps import rfc3339_now
from supervisor.storage.store.database import Database

# Accepted calls kept (the oldest are dropped beyond this), and refused ones.
AUDIT_KEEP = 10_000
REFUSED_KEEP = 1_000
# Rows that wait for the next write at most, and how often the server writes them anyway.
AUDIT_BATCH = 256
AUDIT_FLUSH_S = 0.25
# The oldest rows are dropped each time the row id passes a multiple of this. Public because
# it is part of the bound: between two trims a budget holds up to its keep + `TRIM_EVERY` +
# `AUDIT_BATCH` rows, and that is the size the tests hold the table to.
TRIM_EVERY = 500
# The entry's fields, as `GET /rpc/server/logs` shows them (`authenticated` is the budget's).
FIELDS = ("ts", "key_id", "auth", "method", "path", "status", "duration_ms", "remote_addr")
_TRIM = (
    "DELETE FROM audit WHERE authenticated = ? AND id <= (SELECT id FROM audit "
    "WHERE authenticated = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)

_Row = tuple[str, str, str, str, str, int, float, str, int]


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
        auth: str = "",
        authenticated: bool = True,
    ) -> None:
        """`auth`: how the caller authenticated, or claimed to (`hmac`, `muxi-hmac`,
        `bearer`, `session`; empty when it sent no credentials). `authenticated`: fsup
        accepted them (the row counts against `AUDIT_KEEP`, else `REFUSED_KEEP`)."""
        row = (
            rfc3339_now(),
            key_id,
            auth,
            method,
            path,
            status,
            duration_ms,
            remote,
            int(authenticated),
        )
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
                    "INSERT INTO audit (ts, key_id, auth, method, path, status, duration_ms, "
                    "remote_addr, authenticated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                last = db.execute("SELECT MAX(id) FROM audit").fetchone()[0]
                first = last - len(rows) + 1
                if last // TRIM_EVERY != (first - 1) // TRIM_EVERY:  # passed a multiple
                    db.execute(_TRIM, (1, 1, AUDIT_KEEP))
                    db.execute(_TRIM, (0, 0, REFUSED_KEEP))
        except BaseException:
            # Kept for the next write (a busy database), newest `AUDIT_KEEP` at most.
            self._audit_pending = (rows + self._audit_pending)[-AUDIT_KEEP:]
            raise
        return len(rows)

    def audit_tail(self, count: int) -> list[dict[str, object]]:
        self.flush_audit()
        rows = self._db.execute(
            f"SELECT {', '.join(FIELDS)} FROM audit ORDER BY id DESC LIMIT ?", (count,)
        ).fetchall()
        return [dict(zip(FIELDS, row, strict=True)) for row in reversed(rows)]

    def close(self) -> None:
        """Write what is buffered, then close the connection (a clean stop loses no row)."""
        try:
            self.flush_audit()
        finally:
            super().close()

"""The audit trail: one row per `/rpc` call, refused ones included, the newest kept."""

from __future__ import annotations

from supervisor.core.timestamps import rfc3339_now
from supervisor.storage.store.database import Database

# Audit rows kept (the oldest are dropped beyond this).
AUDIT_KEEP = 10_000


class AuditTrail(Database):
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

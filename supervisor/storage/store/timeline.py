"""A timeline per formation: the `formation_*` envelopes of the event stream, kept so that
they survive restarts of fsup (issue 19).

Each envelope is stored as the stream sent it (its JSON), under its formation, newest last.
Writes are batched as the audit trail's are (`audit.py`): `record_event` only appends to a
list, which is written in one transaction when `TIMELINE_BATCH` envelopes wait, when the
server's flusher ticks, before the timeline is read, and on `close` (a clean stop loses
nothing; a SIGKILL loses at most the last flush interval).

Bounds: the newest `TIMELINE_KEEP` envelopes of each formation. A formation's oldest rows are
dropped once `TRIM_EVERY` of its envelopes were written since its last trim (and at its first
write after the store opens), so between two trims it holds up to `TIMELINE_KEEP` +
`TRIM_EVERY` + `TIMELINE_BATCH` rows. The rows belong to their formation's row (a foreign key
with `ON DELETE CASCADE`): a deleted formation's timeline goes with it, in the same
transaction, and an envelope written after its formation is gone is dropped, so a new
formation under the same id starts with an empty timeline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor.storage.store.database import Database

# Envelopes kept per formation, at most this many wait for the next write, and how often a
# formation's oldest rows are trimmed (in envelopes written since its last trim).
TIMELINE_KEEP = 1_000
TIMELINE_BATCH = 256
TRIM_EVERY = 100
_INSERT = (
    "INSERT INTO timeline (formation_id, envelope) SELECT ?, ? "
    "WHERE EXISTS (SELECT 1 FROM formations WHERE id = ?)"
)
_TRIM = (
    "DELETE FROM timeline WHERE formation_id = ? AND id <= (SELECT id FROM timeline "
    "WHERE formation_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)


class TimelineRecords(Database):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._timeline_pending: list[tuple[str, str]] = []
        # Envelopes written per formation since its last trim (absent: not trimmed yet).
        self._since_trim: dict[str, int] = {}
        # Called when a first envelope starts waiting (the server's flusher wakes for it).
        self.timeline_waiting: Callable[[], None] | None = None

    def record_event(self, formation_id: str, envelope_json: str) -> None:
        """Keep an envelope (its JSON, as the stream sent it) in `formation_id`'s timeline.
        Never writes unless a full batch waits: the publisher is on the hot path."""
        self._timeline_pending.append((formation_id, envelope_json))
        if len(self._timeline_pending) >= TIMELINE_BATCH:
            self.flush_timeline()
        elif len(self._timeline_pending) == 1 and self.timeline_waiting is not None:
            self.timeline_waiting()

    def forget_pending_events(self, formation_id: str) -> None:
        """Drop the envelopes of `formation_id` not written yet (it is being deleted: they
        must not reach a new formation that takes the id before the next write)."""
        self._timeline_pending = [p for p in self._timeline_pending if p[0] != formation_id]
        self._since_trim.pop(formation_id, None)

    def flush_timeline(self) -> int:
        """Write the waiting envelopes in one transaction, trimming the formations that
        passed their trim count; how many were written (or dropped: formation gone)."""
        rows = self._timeline_pending
        if not rows:
            return 0
        self._timeline_pending = []
        counts: dict[str, int] = {}
        for formation_id, _ in rows:
            counts[formation_id] = counts.get(formation_id, 0) + 1
        try:
            with self.transaction() as db:
                db.executemany(_INSERT, [(fid, envelope, fid) for fid, envelope in rows])
                for formation_id, count in counts.items():
                    since = self._since_trim.get(formation_id)
                    if since is None or since + count >= TRIM_EVERY:
                        db.execute(_TRIM, (formation_id, formation_id, TIMELINE_KEEP))
                        self._since_trim[formation_id] = 0
                    else:
                        self._since_trim[formation_id] = since + count
        except BaseException:
            # Kept for the next write (a busy database).
            self._timeline_pending = rows + self._timeline_pending
            raise
        return len(rows)

    def timeline(self, formation_id: str, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` envelopes of `formation_id`, oldest first."""
        self.flush_timeline()
        rows = self._db.execute(
            "SELECT envelope FROM timeline WHERE formation_id = ? ORDER BY id DESC LIMIT ?",
            (formation_id, limit),
        ).fetchall()
        return [json.loads(envelope) for (envelope,) in reversed(rows)]

    def close(self) -> None:
        """Write what is waiting, then close (a clean stop loses no envelope)."""
        try:
            self.flush_timeline()
        finally:
            super().close()

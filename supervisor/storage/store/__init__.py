"""The embedded SQLite store: what must survive a restart of fsup.

One module per aggregate (formations with their versions, the audit trail, searches with their
runs and results, the formations' timelines), one list of migrations, one connection (`database`). `Store` is the
formations' and the audit's view of that connection; `SearchStore` shares it.
"""

from __future__ import annotations

from supervisor.storage.store.audit import AUDIT_BATCH, AUDIT_FLUSH_S, AUDIT_KEEP, AuditTrail
from supervisor.storage.store.formations import FormationRecords, FormationRow, VersionRow
from supervisor.storage.store.migrations import SCHEMA_VERSION, StoreError
from supervisor.storage.store.searches import RESULT_ORDERS, SearchStore
from supervisor.storage.store.timeline import TIMELINE_KEEP, TimelineRecords


class Store(FormationRecords, AuditTrail, TimelineRecords):
    """Formations, versions, the audit trail and the formations' timelines, on one
    connection."""

    def insert_formation(self, formation_id: str, port: int, version: VersionRow) -> FormationRow:
        """A new formation starts with an empty timeline: an envelope of an earlier one under
        the same id, still waiting to be written, is dropped."""
        self.forget_pending_events(formation_id)
        return super().insert_formation(formation_id, port, version)

    def delete_formation(self, formation_id: str) -> None:
        """The row, and with it (cascade) its timeline; its envelopes not written yet too."""
        super().delete_formation(formation_id)
        self.forget_pending_events(formation_id)


__all__ = [
    "AUDIT_BATCH",
    "AUDIT_FLUSH_S",
    "AUDIT_KEEP",
    "RESULT_ORDERS",
    "SCHEMA_VERSION",
    "SearchStore",
    "Store",
    "StoreError",
    "TIMELINE_KEEP",
    "FormationRow",
    "VersionRow",
]

"""The embedded SQLite store: what must survive a restart of fsup.

One module per aggregate (formations with their versions, the audit trail, searches with their
runs and results), one list of migrations, one connection (`database`). `Store` is the
formations' and the audit's view of that connection; `SearchStore` shares it.
"""

from __future__ import annotations

from supervisor.storage.store.audit import AUDIT_BATCH, AUDIT_FLUSH_S, AUDIT_KEEP, AuditTrail
from supervisor.storage.store.formations import FormationRecords, FormationRow, VersionRow
from supervisor.storage.store.migrations import SCHEMA_VERSION, StoreError
from supervisor.storage.store.searches import RESULT_ORDERS, SearchStore


class Store(FormationRecords, AuditTrail):
    """Formations, versions and the audit trail, on one connection."""


__all__ = [
    "AUDIT_BATCH",
    "AUDIT_FLUSH_S",
    "AUDIT_KEEP",
    "RESULT_ORDERS",
    "SCHEMA_VERSION",
    "SearchStore",
    "Store",
    "StoreError",
    "FormationRow",
    "VersionRow",
]

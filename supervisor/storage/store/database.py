"""The one SQLite connection, its settings and its transactions.

Calls are synchronous: each is a sub-millisecond statement on a local WAL database, made from
the trio thread that owns the one connection, so no thread hopping is needed and writes are
naturally serialized.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from supervisor.storage.store.migrations import migrate

# SQLite's page cache for the one connection, in KiB (its default is 2,000). The state is
# small and read through the store's own caches; the cache filled slowly as the audit and
# search results grew, which a 10-minute churn showed as steady growth (issue 17).
CACHE_KIB = 512


class Database:
    """The connection, opened and migrated; `transaction()` for writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        migrate(self._db, str(path))

    @property
    def connection(self) -> sqlite3.Connection:
        """The one connection, for the store of another aggregate that shares it (`SearchStore`):
        it reads on it directly and writes only through `transaction()`, so every write of the
        process stays serialized on one connection. It is not to be closed there: `close()`
        does that, once, for all of them."""
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

"""The store's SQLite page cache is bounded (issue 17: memory that stays flat)."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest

from supervisor.storage.store import SearchStore, Store
from supervisor.storage.store.database import CACHE_KIB


def sqlite_memory_used() -> int:
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.skip("no shared libsqlite3 to ask")
    library = ctypes.CDLL(name)
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return int(library.sqlite3_memory_used())


def test_reading_a_large_store_keeps_sqlite_within_its_cache(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    try:
        assert store.connection.execute("PRAGMA cache_size").fetchone() == (-CACHE_KIB,)
        searches = SearchStore(store)
        searches.insert_search("s1", "needle", "full")
        before = sqlite_memory_used()
        for i in range(4000):  # about 8 MiB of results, sixteen times the cache
            hit = {"result_id": f"r{i}", "kind": "log", "title": "x" * 2000, "sources": ["a"]}
            searches.upsert_result("s1", hit)
        for sort in ("sources", "size", "score", "recent"):
            items, total = searches.results("s1", 5000, 0, sort, None)
            assert total == 4000 and len(items) == 4000
        grown = sqlite_memory_used() - before  # SQLite's default cache grew by 2 MB here
        assert grown < (CACHE_KIB + 256) * 1024, grown
    finally:
        store.close()

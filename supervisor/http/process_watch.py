"""The processes the HTTP API reports figures for (CPU, memory, uptime), watched between calls.

psutil measures `cpu_percent` since the previous look at the same `psutil.Process` object, so
the objects are kept from one call to the next. Every restart brings a new pid, and the server
status, the formation list and the nodes all look (only the nodes know which pids are gone), so
the dead are pruned whenever the cache has grown past twice what was alive at the last pruning:
bounded by the processes alive, not by history (issue 17, memory that stays flat).

One `ProcessWatch` per app, in its services (`HttpServices.process_watch`): two apps in one
process (the tests make many) do not share their processes' CPU figures.
"""

from __future__ import annotations

import time
from typing import Any

import psutil

# Never prune below this many watched processes: pruning checks each one.
PRUNE_FLOOR = 64


class ProcessWatch:
    """psutil processes by pid, kept so that each call's `cpu_percent` is since the last one.

    Its methods block (psutil reads /proc): call them from a worker thread. Several threads
    may use one watch at once (two requests at the same moment), as the dict operations they
    make are each atomic and a pid dropped twice is no error."""

    def __init__(self, prune_floor: int = PRUNE_FLOOR) -> None:
        self._watched: dict[int, psutil.Process] = {}
        self._prune_floor = prune_floor
        self._prune_above = prune_floor

    def __len__(self) -> int:
        """How many processes are watched (what the cache holds)."""
        return len(self._watched)

    def __contains__(self, pid: object) -> bool:
        return pid in self._watched

    def figures(self, pid: int) -> dict[str, Any]:
        """cpu_percent (since the previous call for this pid; 0.0 the first time), rss_bytes,
        uptime_s; each None when the process cannot be read."""
        try:
            proc = self._watched.get(pid)
            if proc is None or not proc.is_running():
                proc = self._watch(pid)
            with proc.oneshot():
                return {
                    "cpu_percent": proc.cpu_percent(interval=None),
                    "rss_bytes": proc.memory_info().rss,
                    "uptime_s": round(time.time() - proc.create_time(), 3),
                }
        except psutil.Error:
            self._watched.pop(pid, None)
            return {"cpu_percent": None, "rss_bytes": None, "uptime_s": None}

    def forget_gone(self, pids: set[int]) -> None:
        """Forget every process but `pids` (the nodes' caller knows all that are alive)."""
        for pid in list(self._watched):
            if pid not in pids:
                self._watched.pop(pid, None)  # a figures() thread may have dropped it too

    def _watch(self, pid: int) -> psutil.Process:
        if len(self._watched) >= self._prune_above:
            for known, proc in list(self._watched.items()):
                if not proc.is_running():
                    self._watched.pop(known, None)  # another thread may have dropped it too
            self._prune_above = max(self._prune_floor, 2 * len(self._watched))
        proc = self._watched[pid] = psutil.Process(pid)
        return proc

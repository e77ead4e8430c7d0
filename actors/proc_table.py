"""The machine's process table, read once for many callers that need it at the same moment.

Stopping a process means finding its descendants (to signal those that left its group), and a
process's descendants are found only by reading every process's parent: one /proc/<pid>/stat
per process on the machine. fsup's shutdown stops every formation at once, and 100 stops that
each read the table (psutil's `children(recursive=True)`) took 0.5 s of fsup's only thread
before the last SIGTERM went out. So a read of the table is shared by every stop that begins
within `FRESH_S` of it. Likewise the search for a formation's strays reads every process's
environment; sweeps that queue up behind one another share the scan that follows.

A table read a moment ago can lack a process started since: where that matters (the look
after a stop's grace period, for what the process started meanwhile), callers ask for a
fresh one.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import psutil

# A table read this recently (seconds) serves a caller that does not ask for a fresh one.
FRESH_S = 0.05

_table: tuple[float, dict[int, list[int]]] = (-math.inf, {})


def read_table() -> dict[int, list[int]]:
    """Children by parent pid, from /proc/<pid>/stat (its 4th field, after the command
    name in parentheses, which may itself hold spaces and parentheses). Public: it is the
    read this module exists to share, and the tests count its calls to prove the sharing."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue  # gone meanwhile
        fields = data[data.rfind(b")") + 2 :].split(b" ", 2)
        if len(fields) >= 2 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(name))
    return children


def descendants(pid: int, fresh: bool = False) -> list[psutil.Process]:
    """Every live descendant of `pid` (as psutil processes, which remember their start time
    and so are never a recycled pid), from a table at most `FRESH_S` old unless `fresh`."""
    global _table
    taken_at, children = _table
    now = time.monotonic()
    if fresh or now - taken_at > FRESH_S:
        children = read_table()
        _table = (now, children)
    found: list[psutil.Process] = []
    queue = list(children.get(pid, ()))
    while queue:
        child = queue.pop()
        try:
            found.append(psutil.Process(child))
        except psutil.Error:
            continue  # gone since the table was read
        queue.extend(children.get(child, ()))
    return found


T = TypeVar("T")


class SharedScan(Generic[T]):
    """A blocking scan whose result may be shared by callers that asked for it while it had
    not begun yet: a caller takes a result only from a scan that started after it asked
    (so it sees every process alive when it asked), and callers waiting on one scan in flight
    share the next. Thread-safe: sweeps run in worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[Path, tuple[float, T]] = {}

    def get(self, key: Path, scan: Callable[[], T]) -> T:
        asked = time.monotonic()
        with self._lock:
            cached = self._results.get(key)
            if cached is not None and cached[0] >= asked:
                return cached[1]
            started = time.monotonic()
            result = scan()
            self._results[key] = (started, result)
            return result

"""The shared process table: descendants found from one read for many stops, fresh when
asked; and stray scans shared by the sweeps that queue up behind one another."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from actors import proc_table
from actors.proc_table import SharedScan, descendants


def test_descendants_are_found_through_the_generations() -> None:
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & sh -c 'sleep 31' & wait"])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            names = sorted(p.cmdline()[-1] for p in descendants(shell.pid, fresh=True))
            if names.count("30") == 1 and names.count("31") == 1:
                break
            time.sleep(0.01)
        expected = {p.pid for p in psutil.Process(shell.pid).children(recursive=True)}
        assert {p.pid for p in descendants(shell.pid, fresh=True)} == expected
        assert len(expected) >= 3  # sleep 30, the inner sh, and its sleep 31
    finally:
        for proc in psutil.Process(shell.pid).children(recursive=True):
            proc.kill()
        shell.kill()
        shell.wait()


def test_stops_that_begin_together_share_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    real = proc_table.read_table

    def counted() -> dict[int, list[int]]:
        reads.append(time.monotonic())
        return real()

    monkeypatch.setattr(proc_table, "read_table", counted)
    leaf = subprocess.Popen(["sleep", "30"])
    try:
        assert descendants(leaf.pid, fresh=True) == []  # read now, whatever was read before
        for _ in range(100):  # the stops that begin together
            assert descendants(leaf.pid) == []
        assert len(reads) == 1
        descendants(leaf.pid, fresh=True)  # a look for what started since: read again
        assert len(reads) == 2
        monkeypatch.setattr(proc_table, "FRESH_S", 0.0)
        descendants(leaf.pid)
        descendants(leaf.pid)
        assert len(reads) == 4
    finally:
        leaf.kill()
        leaf.wait()


def test_sweeps_that_queue_up_share_the_next_scan() -> None:
    shared: SharedScan[int] = SharedScan()
    scans: list[float] = []
    first_running = threading.Event()
    asking = threading.Semaphore(0)

    def scan() -> int:
        scans.append(time.monotonic())
        if not first_running.is_set():
            first_running.set()
            # Held until the five have asked (each signals right before it asks; the short
            # sleep covers the step from the signal to the ask).
            for _ in range(5):
                assert asking.acquire(timeout=20), "the five callers never asked"
            time.sleep(0.05)
        return len(scans)

    def ask() -> None:
        asking.release()
        results.append(shared.get(Path("/h"), scan))

    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(shared.get(Path("/h"), scan)))
    first.start()
    first_running.wait()
    queued = [threading.Thread(target=ask) for _ in range(5)]
    for thread in queued:
        thread.start()
    for thread in (first, *queued):
        thread.join()
    # The first scan began before the five asked: they share the one that followed.
    assert len(scans) == 2 and sorted(results) == [1, 2, 2, 2, 2, 2]
    # Asked after that scan began: a scan of its own.
    assert shared.get(Path("/h"), scan) == 3
    assert shared.get(Path("/other"), scan) == 4  # another home, another scan

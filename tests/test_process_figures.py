"""The psutil cache behind the process figures (status, formation list, nodes) stays bounded
by the processes alive: every restart brings a new pid (issue 17, memory that stays flat)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from supervisor.http import operations_api


def test_figures_forget_processes_that_are_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operations_api, "_watched", {})
    monkeypatch.setattr(operations_api, "PRUNE_FLOOR", 4)
    monkeypatch.setattr(operations_api, "_prune_above", 4)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for _ in range(30):  # thirty processes that come and go, one that stays
            child = subprocess.Popen([sys.executable, "-c", "pass"])
            figures = operations_api.process_figures(child.pid)
            child.wait()
            assert set(figures) == {"cpu_percent", "rss_bytes", "uptime_s"}
            assert operations_api.process_figures(alive.pid)["rss_bytes"]
            assert len(operations_api._watched) <= 8
        assert alive.pid in operations_api._watched
    finally:
        alive.kill()
        alive.wait()

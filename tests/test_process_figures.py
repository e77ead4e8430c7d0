"""The psutil cache behind the process figures (status, formation list, nodes) stays bounded
by the processes alive: every restart brings a new pid (issue 17, memory that stays flat)."""

from __future__ import annotations

import subprocess
import sys

from supervisor.http.process_watch import ProcessWatch


def test_figures_forget_processes_that_are_gone() -> None:
    watch = ProcessWatch(prune_floor=4)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for _ in range(30):  # thirty processes that come and go, one that stays
            child = subprocess.Popen([sys.executable, "-c", "pass"])
            figures = watch.figures(child.pid)
            child.wait()
            assert set(figures) == {"cpu_percent", "rss_bytes", "uptime_s"}
            assert watch.figures(alive.pid)["rss_bytes"]
            assert len(watch) <= 8
        assert alive.pid in watch
    finally:
        alive.kill()
        alive.wait()


def test_the_nodes_forget_what_they_no_longer_list() -> None:
    watch = ProcessWatch()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for proc in (alive, other):
            assert watch.figures(proc.pid)["cpu_percent"] == 0.0  # the first look
        watch.forget_gone({alive.pid})
        assert (len(watch), alive.pid in watch, other.pid in watch) == (1, True, False)
    finally:
        for proc in (alive, other):
            proc.kill()
            proc.wait()

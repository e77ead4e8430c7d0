"""Defects the chaos run found, each replayed on its own, deterministically and quickly."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from chaos_procs import mains, orphans_of, scan
from helpers import Server, formation_processes, make_bundle, nasty_bundle, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]


def test_a_killed_main_leaves_no_grandchild_behind(server: Server, home: Path) -> None:
    """`stubborn` starts a grandchild that left its process group (setsid). When the main
    process is SIGKILLed, fsup restarts the formation; the old grandchild must not live on
    as an orphan of the home (nor survive a clean stop of fsup)."""
    first = server.rpc.deploy(nasty_bundle("charlie", "stubborn"))
    os.kill(first["pid"], signal.SIGKILL)

    def restarted() -> dict | None:
        shown = server.formation("charlie")
        fresh = shown["status"] == "running" and shown["healthy"] and shown["pid"] != first["pid"]
        return shown if fresh else None

    again = wait_for(restarted)
    procs = scan(home).get("charlie", [])
    assert [p.pid for p in mains(procs)] == [again["pid"]]
    deadline = time.monotonic() + 10
    while (
        left := orphans_of(scan(home).get("charlie", []), again["pid"])
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.stop() == 0
    after_stop = formation_processes(home)
    for proc in after_stop:
        proc.kill()
    assert not left, f"orphans of the killed main: {[p.describe() for p in left]}"
    assert not after_stop, f"left after a clean stop: {[p.pid for p in after_stop]}"


# Leaves a descendant outside its tree when asked to stop: `daemon` double-forks one (its
# parent exits at once: it is no descendant of anything) and exits; `late` starts one in a new
# session and goes on ignoring the signal, so the stop ends with SIGKILL.
LEAVER = """
import os, signal, subprocess, sys, time

def on_term(*_):
    if sys.argv[1] == "daemon":
        if os.fork() == 0:
            if os.fork() == 0:
                os.setsid()
                time.sleep(60)
            os._exit(0)
        os.wait()
        os._exit(0)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                     start_new_session=True)

signal.signal(signal.SIGTERM, on_term)
while True:
    time.sleep(1)
"""


def leaver_bundle(formation_id: str, mode: str) -> bytes:
    doc = {
        "id": formation_id,
        "version": "1.0.0",
        "command": ["python3", "app.py", mode],
        "health": {"interval": 0.5, "timeout": 10},
        "stop": {"timeout": 1},
    }
    return make_bundle({"formation.yaml": json.dumps(doc), "app.py": LEAVER})


@pytest.mark.parametrize("mode", ["daemon", "late"])
def test_what_a_stopped_process_leaves_outside_its_tree_is_killed(
    server: Server,
    home: Path,
    mode: str,
) -> None:
    """A restart stops the process (which then leaves a descendant outside its tree) and starts
    a new one at once: the old descendant is killed, the new process is not."""
    first = server.rpc.deploy(leaver_bundle("leaver", mode))
    again = server.rpc.call("POST", "/rpc/formations/leaver/restart")
    assert again["status"] == "running" and again["pid"] != first["pid"]
    deadline = time.monotonic() + 10
    while (
        left := orphans_of(scan(home).get("leaver", []), again["pid"])
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = psutil.pid_exists(again["pid"]) and server.formation("leaver")["pid"] == again["pid"]
    server.rpc.call("POST", "/rpc/formations/leaver/stop")
    for proc in left:
        proc_kill(proc.pid)
    assert not left, f"left by the stopped process: {[p.describe() for p in left]}"
    assert alive, "the new process did not survive the sweep"
    wait_for(lambda: not formation_processes(home, "leaver"), timeout=10)


def proc_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_a_clean_stop_of_fsup_leaves_nothing_behind(server: Server, home: Path) -> None:
    """fsup's own shutdown stops the formation last: what that stop leaves outside the tree is
    swept too, although the formation's actor is ending."""
    server.rpc.deploy(leaver_bundle("leaver", "daemon"))
    assert server.stop() == 0
    left = formation_processes(home, "leaver")
    for proc in left:
        proc_kill(proc.pid)
    assert not left, f"left after a clean stop: {[p.pid for p in left]}"

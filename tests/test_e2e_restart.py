"""End-to-end: fsup itself restarts (cleanly or killed) and its formations come back right,
with exactly one process per formation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers import NASTY, Server, formation_processes, main_processes, nasty_bundle, wait_for

pytestmark = pytest.mark.e2e


def running(server: Server, formation_id: str) -> dict | None:
    shown = server.formation(formation_id)
    return shown if shown["status"] == "running" and shown["healthy"] else None


def test_clean_restart_brings_back_what_was_running(server: Server, home: Path) -> None:
    server.rpc.deploy(nasty_bundle("keeper"))
    server.rpc.deploy(nasty_bundle("sleeper"))
    server.rpc.call("POST", "/rpc/formations/sleeper/stop")

    assert server.stop(signal.SIGTERM) == 0
    assert not formation_processes(home), "a clean stop stops every formation"

    server.start()
    keeper = wait_for(lambda: running(server, "keeper"))
    assert [p.pid for p in main_processes(home, "keeper")] == [keeper["pid"]]
    assert server.formation("sleeper")["status"] == "stopped"
    assert not formation_processes(home, "sleeper")


def test_after_sigkill_the_next_fsup_adopts_the_running_children(
    server: Server, home: Path
) -> None:
    first = server.rpc.deploy(nasty_bundle("survivor"))
    server.rpc.deploy(nasty_bundle("resting"))
    server.rpc.call("POST", "/rpc/formations/resting/stop")

    server.kill()
    assert psutil.Process(first["pid"]).is_running(), "children outlive a killed fsup"

    server.start()
    adopted = wait_for(lambda: running(server, "survivor"))
    assert adopted["pid"] == first["pid"]
    assert [p.pid for p in main_processes(home, "survivor")] == [first["pid"]]
    assert server.formation("resting")["status"] == "stopped"

    # An adopted process is still supervised: kill it and it is restarted.
    os.kill(first["pid"], signal.SIGKILL)
    again = wait_for(lambda: (s := running(server, "survivor")) and s["pid"] != first["pid"] and s)
    assert again["restart_count"] == 1
    assert [p.pid for p in main_processes(home, "survivor")] == [again["pid"]]


def test_a_stray_process_of_this_home_is_killed_on_start(server: Server, home: Path) -> None:
    first = server.rpc.deploy(nasty_bundle("single"))
    server.kill()
    # A process fsup would have spawned just before dying, before recording its pid.
    env = {**os.environ, "MUXI_HOME": str(home), "FORMATION_ID": "single", "PORT": "1"}
    stray = subprocess.Popen(
        [sys.executable, str(NASTY), "silent"], env=env, start_new_session=True
    )
    try:
        server.start()
        wait_for(lambda: stray.poll() is not None, timeout=10)
        assert wait_for(lambda: running(server, "single"))["pid"] == first["pid"]
        assert [p.pid for p in main_processes(home, "single")] == [first["pid"]]
    finally:
        if stray.poll() is None:
            stray.kill()
        stray.wait()

"""End-to-end: a real fsup (Hypercorn, SQLite) supervising real processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import (
    Server,
    example_bundle,
    formation_processes,
    main_processes,
    nasty_bundle,
    wait_for,
)
from port_blocks import PORT_HIGH, PORT_LOW

from supervisor.cli.client import ApiError

pytestmark = pytest.mark.e2e


def test_deploy_json_runs_the_example_with_its_environment(server: Server, home: Path) -> None:
    result = server.rpc.deploy(example_bundle("hello"))
    assert result["formation_id"] == "hello"
    assert result["status"] == "running"
    assert result["healthy"] is True
    port, pid = result["port"], result["pid"]
    assert PORT_LOW <= port <= PORT_HIGH

    answer = httpx.get(f"http://127.0.0.1:{port}/", trust_env=False).json()
    assert answer["message"] == "hello from 1.0.0"
    assert answer["pid"] == pid

    proc = psutil.Process(pid)
    env = proc.environ()
    assert env["PORT"] == str(port)
    assert env["HOST"] == "127.0.0.1"
    assert env["FORMATION_ID"] == "hello"
    assert env["FORMATION_VERSION"] == "1.0.0"
    assert env["MUXI_SERVER_URL"] == server.url
    assert env["GREETING"] == "hello"
    assert proc.cwd() == str(home / "server" / "formations" / "hello" / "versions" / "1.0.0")
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # its own session and group

    shown = server.formation("hello")
    assert shown["status"] == "running" and shown["pid"] == pid
    assert shown["versions"] == ["1.0.0"]
    assert shown["update_in_progress"] is False
    listed = server.rpc.call("GET", "/rpc/formations")
    assert listed["total"] == 1 and listed["formations"][0]["id"] == "hello"
    logs = home / "server" / "logs" / "formations" / "hello"
    # The keeper's file of the version, in the CRI format (time, stream, tag, text).
    wait_for(lambda: " stdout F hello 1.0.0 listening on port" in (logs / "1.0.0.log").read_text())


def test_deploy_streams_the_seed_stages_in_order(server: Server) -> None:
    events = list(
        server.rpc.stream(
            "POST",
            "/rpc/formations/deploy",
            nasty_bundle("sse-app"),
            {"Content-Type": "application/gzip"},
        )
    )
    kinds = [e.event for e in events]
    assert kinds[-1] == "complete" and set(kinds[:-1]) == {"progress"}
    stages = [e.data["stage"] for e in events[:-1]]
    distinct = list(dict.fromkeys(stages))
    assert distinct == [
        "extracting",
        "validating",
        "resolving_runtime",
        "downloading_sif",
        "pulling_runner",
        "spawning",
        "health_check",
    ]
    skipped = {e.data["stage"] for e in events if e.data.get("skipped")}
    assert skipped == {"downloading_sif", "pulling_runner"}
    checks = [e.data for e in events if e.data.get("stage") == "health_check"]
    assert all({"attempt", "max_attempts", "remaining_s"} <= c.keys() for c in checks)
    assert checks[0]["attempt"] == 1 and checks[0]["remaining_s"] <= 10
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    done = events[-1].data
    assert done["formation_id"] == "sse-app" and done["status"] == "running"
    assert server.formation("sse-app")["pid"] == done["pid"]


def test_sigkilled_child_comes_back_healthy(server: Server) -> None:
    first = server.rpc.deploy(nasty_bundle("phoenix"))
    os.kill(first["pid"], signal.SIGKILL)

    def back() -> dict | None:
        shown = server.formation("phoenix")
        ok = shown["status"] == "running" and shown["pid"] not in (None, first["pid"])
        return shown if ok and shown["healthy"] else None

    shown = wait_for(back)
    assert shown["restart_count"] == 1
    assert shown["last_exit_code"] == -signal.SIGKILL
    answer = httpx.get(f"http://127.0.0.1:{shown['port']}/", trust_env=False).json()
    assert answer["pid"] == shown["pid"]


def test_crash_loop_gives_up_as_crashed(server: Server, home: Path) -> None:
    restart = {
        "policy": "on-failure",
        "backoff": {"initial": 0.05, "factor": 2, "max": 0.2},
        "max_restarts": 3,
        "window": 60,
    }
    # Passes its 1 s stay-up check, then exits with code 3 at 1.3 s, every time.
    first = server.rpc.deploy(nasty_bundle("crashy", "flap", health={}, restart=restart))
    assert first["status"] == "running"
    shown = wait_for(lambda: (s := server.formation("crashy"))["status"] == "crashed" and s)
    assert shown["restart_count"] == 3
    assert shown["pid"] is None
    assert shown["last_exit_code"] == 3
    assert "giving up" in shown["last_error"]
    assert not formation_processes(home, "crashy")


def test_first_start_that_crashes_is_refused_and_removed(server: Server, home: Path) -> None:
    with pytest.raises(ApiError) as info:
        server.rpc.deploy(nasty_bundle("doomed", "crash"))
    error = info.value
    assert (error.status, error.code) == (422, "HEALTH_CHECK_FAILED")
    assert error.details["exit_code"] == 3
    assert "something went badly wrong" in error.details["stderr_tail"]
    with pytest.raises(ApiError) as missing:
        server.formation("doomed")
    assert missing.value.code == "FORMATION_NOT_FOUND"
    assert not (home / "server" / "formations" / "doomed").exists()
    # The id is free again.
    assert server.rpc.deploy(nasty_bundle("doomed"))["status"] == "running"


def test_stop_start_restart_delete(server: Server, home: Path) -> None:
    first = server.rpc.deploy(nasty_bundle("cycle"))
    stopped = server.rpc.call("POST", "/rpc/formations/cycle/stop")
    assert stopped["status"] == "stopped" and stopped["pid"] is None
    assert not psutil.pid_exists(first["pid"]) or psutil.Process(first["pid"]).status() == "zombie"
    assert server.formation("cycle")["status"] == "stopped"

    started = server.rpc.call("POST", "/rpc/formations/cycle/start")
    assert started["status"] == "running" and started["pid"] != first["pid"]

    events = list(server.rpc.stream("POST", "/rpc/formations/cycle/restart"))
    assert events[0].data["stage"] == "stopping"
    assert events[-1].event == "complete"
    restarted = events[-1].data
    assert restarted["pid"] not in (first["pid"], started["pid"])
    assert main_processes(home, "cycle")[0].pid == restarted["pid"]

    deleted = server.rpc.call("DELETE", "/rpc/formations/cycle")
    assert deleted == {"id": "cycle", "deleted": True}
    assert not formation_processes(home, "cycle")
    assert not (home / "server" / "formations" / "cycle").exists()
    with pytest.raises(ApiError) as info:
        server.formation("cycle")
    assert (info.value.status, info.value.code) == (404, "FORMATION_NOT_FOUND")


def test_stop_kills_a_stubborn_process_tree(server: Server, home: Path) -> None:
    result = server.rpc.deploy(nasty_bundle("stubborn", "stubborn", stop={"timeout": 1}))
    tree = wait_for(lambda: len(procs := formation_processes(home, "stubborn")) == 3 and procs)
    sessions = {os.getsid(p.pid) for p in tree}
    assert len(sessions) == 2  # one grandchild left the group with setsid
    stopped = server.rpc.call("POST", "/rpc/formations/stubborn/stop")
    assert stopped["status"] == "stopped"
    wait_for(lambda: not formation_processes(home, "stubborn"), timeout=5)
    assert server.formation("stubborn")["last_exit_code"] == -signal.SIGKILL
    assert result["pid"] in {p.pid for p in tree}

"""End-to-end: routing summary, nodes, reconcile (bootstrap) and routing refresh match the
real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers import NASTY, Server, main_processes, nasty_bundle, wait_for
from helpers import api_client as api

pytestmark = pytest.mark.e2e


def test_nodes_and_routing_summary_match_reality(server: Server, home: Path) -> None:
    first = server.rpc.deploy(nasty_bundle("north"))
    second = server.rpc.deploy(
        nasty_bundle("south", health={"http": "/health", "interval": 0.2, "timeout": 30})
    )
    server.rpc.deploy(nasty_bundle("west"))
    server.rpc.call("POST", "/rpc/formations/west/stop")
    with api(server) as client:
        nodes = client.get("/nodes").json()
        assert nodes["total"] == 2
        by_id = {n["formation_id"]: n for n in nodes["nodes"]}
        assert by_id["north"]["pid"] == first["pid"] and by_id["south"]["pid"] == second["pid"]
        for node in nodes["nodes"]:
            proc = psutil.Process(node["pid"])
            assert node["role"] == "active" and node["state"] == "running" and node["healthy"]
            assert node["rss_bytes"] == pytest.approx(proc.memory_info().rss, rel=0.5)
            assert 0 <= node["uptime_s"] < 60 and node["cpu_percent"] is not None
            assert node["last_health_check_age_s"] < 3
        paged = client.get("/nodes", params={"limit": 1, "offset": 1}).json()
        assert len(paged["nodes"]) == 1 and paged["total"] == 2

        summary = client.get("/routing/summary").json()
        assert summary["routes"] == 3 and summary["serving"] == 2
        assert summary["healthy"] == 2 and summary["stale"] == 0
        assert 0 <= summary["refresh_age_s"]["max"] < 3

        # A probe that stops answering makes its route stale within 3 intervals.
        os.kill(second["pid"], 19)  # SIGSTOP: alive, but answers nothing
        try:
            stale = wait_for(lambda: (s := client.get("/routing/summary").json())["stale"] and s)
            assert stale["stale"] == 1 and stale["healthy"] == 1
        finally:
            os.kill(second["pid"], 18)  # SIGCONT

        refreshed = client.post("/routing/refresh").json()
        assert sorted(refreshed["refreshing"]) == ["north", "south"] and refreshed["total"] == 3


def test_bootstrap_reconciles_strays_and_crashed_formations(server: Server, home: Path) -> None:
    restart = {"policy": "on-failure", "max_restarts": 0}
    server.rpc.deploy(nasty_bundle("fragile", "flap", health={}, restart=restart))
    wait_for(lambda: server.formation("fragile")["status"] == "crashed")
    keeper = server.rpc.deploy(nasty_bundle("keeper"))
    env = {**os.environ, "MUXI_HOME": str(home), "FORMATION_ID": "keeper", "PORT": "1"}
    stray = subprocess.Popen(
        [sys.executable, str(NASTY), "silent"], env=env, start_new_session=True
    )
    try:
        with api(server) as client:
            result = client.post("/bootstrap").json()
        assert result == {"formations": 2, "strays_killed": 1}
        wait_for(lambda: stray.poll() is not None, timeout=10)
        assert [p.pid for p in main_processes(home, "keeper")] == [keeper["pid"]]
        wait_for(lambda: server.formation("fragile")["pid"] is not None)  # started again
    finally:
        if stray.poll() is None:
            stray.kill()
        stray.wait()

"""A formation's timeline on a real server: a `kill -9` of its process is told (the signal by
name, the restart after it) and `last_error` keeps it; the timeline survives a SIGKILL and a
restart of fsup; a failed update says its stage and the check's last error; both doors
(`/rpc` signed, `/api/v1` with the bearer) answer the same, and refuse a bad limit or an
unknown formation in the contract's shape."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from helpers import Server, api_client, nasty_bundle, wait_for

from supervisor.cli.client import ApiError

GZIP = {"Content-Type": "application/gzip"}


def timeline(server: Server, formation_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    answer = server.rpc.call("GET", f"/rpc/formations/{formation_id}/events?limit={limit}")
    assert answer["formation_id"] == formation_id
    return answer["events"]  # type: ignore[no-any-return]


def changes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "formation_state_changed"]


def test_a_kill_9_is_told_kept_in_last_error_and_survives_a_restart_of_fsup(
    server: Server,
) -> None:
    first = server.rpc.deploy(nasty_bundle("phoenix"))
    os.kill(first["pid"], signal.SIGKILL)

    def back() -> dict[str, Any] | None:
        shown = server.formation("phoenix")
        ok = shown["status"] == "running" and shown["pid"] not in (None, first["pid"])
        return shown if ok and shown["healthy"] else None

    shown = wait_for(back)
    assert shown["last_error"] == "process was killed by SIGKILL"

    events = timeline(server, "phoenix")
    assert all(set(e) == {"type", "ts", "search_id", "data"} for e in events)
    steps = [(c["from"], c["to"], c["reason"]) for c in changes(events)]
    died = steps.index(("running", "restarting", "exited"))
    assert steps[:died] == [("stopped", "starting", "start"), ("starting", "running", "healthy")]
    assert steps[died + 1 :] == [
        ("restarting", "starting", "backoff_elapsed"),
        ("starting", "running", "healthy"),
    ]
    ended = changes(events)[died]["exit"]
    assert ended["description"] == "killed by SIGKILL" and ended["signal"] == "SIGKILL"
    assert ended["pid"] == first["pid"] and ended["exit_code"] is None
    assert ended["uptime_s"] >= 0
    assert [e["type"] for e in events].count("formation_deployed") == 1

    with api_client(server) as api:
        answer = api.get("/formations/phoenix/events?limit=2")
        assert answer.status_code == 200
        assert answer.json() == {"formation_id": "phoenix", "events": events[-2:]}
        refused = api.get("/formations/phoenix/events?limit=0").json()
        assert refused["error"]["code"] == "INVALID_REQUEST"
        assert api.get("/formations/nobody/events").status_code == 404
    for query in ("limit=1001", "limit=x"):
        with pytest.raises(ApiError) as bad:
            server.rpc.call("GET", f"/rpc/formations/phoenix/events?{query}")
        assert (bad.value.status, bad.value.code) == (400, "INVALID_REQUEST")
    with pytest.raises(ApiError) as unknown:
        timeline(server, "nobody")
    assert (unknown.value.status, unknown.value.code) == (404, "FORMATION_NOT_FOUND")

    server.kill()  # what was read was written; a SIGKILL loses at most the last 0.25 s
    server.start()
    again = timeline(server, "phoenix")
    assert again[: len(events)] == events
    assert server.formation("phoenix")["pid"] == shown["pid"]  # adopted, still running

    assert server.stop() == 0  # a clean stop writes what waits: its own shutdown too
    server.start()
    steps = [(c["from"], c["to"], c["reason"]) for c in changes(timeline(server, "phoenix"))]
    shutdown = steps.index(("running", "stopping", "shutdown"))
    assert steps[shutdown + 1] == ("stopping", "stopped", "shutdown")
    assert steps[shutdown + 2] == ("stopped", "starting", "restored")


def test_a_failed_update_says_its_stage_and_the_checks_last_error(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("steady"))
    never = nasty_bundle(
        "steady",
        "silent",
        version="1.1.0",
        health={"http": "/health", "interval": 0.1, "timeout": 1},
    )
    with pytest.raises(ApiError) as failed:
        server.rpc.call("PUT", "/rpc/formations/steady", never, GZIP)
    assert failed.value.code == "HEALTH_CHECK_FAILED"
    (aborted,) = [
        e["data"] for e in timeline(server, "steady") if e["type"] == "formation_update_aborted"
    ]
    assert aborted["kind"] == "update" and aborted["stage"] == "health_check"
    assert (aborted["version"], aborted["previous_version"]) == ("1.1.0", "1.0.0")
    assert aborted["code"] == "HEALTH_CHECK_FAILED" and "last error:" in aborted["error"]
    assert server.formation("steady")["version"] == "1.0.0"

    server.rpc.call("PUT", "/rpc/formations/steady", nasty_bundle("steady", version="1.2.0"), GZIP)
    server.rpc.call("POST", "/rpc/formations/steady/rollback")
    told = [(e["type"], e["data"].get("version")) for e in timeline(server, "steady")]
    assert told[-2:] == [("formation_updated", "1.2.0"), ("formation_rolled_back", "1.0.0")]

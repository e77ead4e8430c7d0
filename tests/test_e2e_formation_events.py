"""End-to-end: the fleet's life on `/api/v1/events` (DESIGN section 6), awaited, not polled.

A reader thread puts every event of the stream in a queue; the test blocks on the queue for
the event it expects, so it waits exactly as long as fsup takes and never sleeps.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import Server, nasty_bundle

from supervisor.cli.client import ApiClient

pytestmark = pytest.mark.e2e

GZIP = {"Content-Type": "application/gzip"}
FLEET_TYPES = {
    "formation_state_changed",
    "formation_deployed",
    "formation_updated",
    "formation_rolled_back",
    "formation_deleted",
    "formation_health_changed",
}


class Events:
    """The fleet's events as they arrive; `expect` waits for the next one that matches."""

    def __init__(self) -> None:
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []

    def expect(self, type_: str, timeout: float = 30.0, **data: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {type_} {data} within {timeout}s; saw {self.seen}")
            try:
                event = self.queue.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(event)
            if event["type"] == type_ and all(event["data"].get(k) == v for k, v in data.items()):
                return event

    def transitions(self, formation_id: str) -> list[tuple[str, str, str]]:
        return [
            (e["data"]["from"], e["data"]["to"], e["data"]["reason"])
            for e in self.seen
            if e["type"] == "formation_state_changed" and e["data"]["formation_id"] == formation_id
        ]


@contextmanager
def fleet_events(server: Server) -> Iterator[Events]:
    events = Events()
    with ApiClient(server.url) as client:
        client.login()
        with client.open_events() as stream:

            def read() -> None:
                try:
                    for event in stream:
                        if event.data["type"] in FLEET_TYPES:
                            events.queue.put(event.data)
                except Exception:  # noqa: BLE001 - the stream closes when the test ends
                    return

            threading.Thread(target=read, daemon=True).start()
            yield events


def run(call: Callable[[], Any]) -> threading.Thread:
    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    return worker


def test_deploy_crash_update_rollback_and_delete_are_announced(server: Server) -> None:
    with fleet_events(server) as events:
        deployed = server.rpc.deploy(nasty_bundle("herald"))
        event = events.expect("formation_deployed", formation_id="herald")
        assert event["search_id"] is None and event["ts"]
        assert event["data"]["version"] == "1.0.0" and event["data"]["pid"] == deployed["pid"]
        assert events.transitions("herald") == [
            ("stopped", "starting", "start"),
            ("starting", "running", "healthy"),
        ]
        health = [e for e in events.seen if e["type"] == "formation_health_changed"]
        assert health[-1]["data"] == {"formation_id": "herald", "healthy": True, "error": None}

        os.kill(deployed["pid"], signal.SIGKILL)
        restarting = events.expect(
            "formation_state_changed", formation_id="herald", to="restarting"
        )
        assert restarting["data"]["reason"] == "exited"
        assert restarting["data"]["restart_count"] == 1
        running = events.expect("formation_state_changed", formation_id="herald", to="running")
        assert running["data"]["pid"] not in (None, deployed["pid"])

        server.rpc.call(
            "PUT", "/rpc/formations/herald", nasty_bundle("herald", version="1.1.0"), GZIP
        )
        updated = events.expect("formation_updated", formation_id="herald")
        assert updated["data"]["version"] == "1.1.0"
        assert updated["data"]["previous_version"] == "1.0.0"

        server.rpc.call("POST", "/rpc/formations/herald/rollback")
        rolled = events.expect("formation_rolled_back", formation_id="herald")
        assert rolled["data"]["version"] == "1.0.0"

        server.rpc.call("DELETE", "/rpc/formations/herald")
        stopping = events.expect("formation_state_changed", formation_id="herald", to="stopping")
        assert stopping["data"]["reason"] == "delete"
        deleted = events.expect("formation_deleted", formation_id="herald")
        assert deleted["data"]["deployed"] is True


def test_a_stop_and_a_start_are_announced_with_their_reasons(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("crier"))
    with fleet_events(server) as events:
        worker = run(lambda: server.rpc.call("POST", "/rpc/formations/crier/stop"))
        stopped = events.expect("formation_state_changed", formation_id="crier", to="stopped")
        worker.join(30)
        assert stopped["data"]["reason"] == "stop" and stopped["data"]["pid"] is None
        server.rpc.call("POST", "/rpc/formations/crier/start")
        events.expect("formation_state_changed", formation_id="crier", to="running")
        assert events.transitions("crier") == [
            ("running", "stopping", "stop"),
            ("stopping", "stopped", "stop"),
            ("stopped", "starting", "start"),
            ("starting", "running", "healthy"),
        ]

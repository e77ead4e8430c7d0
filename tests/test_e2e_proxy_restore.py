"""End-to-end: a proxied request that arrives while fsup restores after its own start is held
like one during a restart, never answered 404 before the restored routes exist (issue 17).

fsup's port is bound the moment it starts (`http.early`) and the connections made meanwhile
are served once the app runs, which is before the fleet has restored its formations' routes.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from helpers import ClientThreads, Server, nasty_bundle, wait_for

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EarlyClients(ClientThreads):
    """Threads that send GETs to `url` from before fsup listens, each on a fresh connection,
    counting the statuses; a refused connection (nothing bound yet) is tried again."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.statuses: Counter[int] = Counter()
        self.bodies: list[str] = []
        super().__init__(url, clients)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = httpx.get(self.url, trust_env=False, timeout=30)
            except httpx.TransportError:
                time.sleep(0.005)
                continue
            with self._lock:
                self.statuses[answer.status_code] += 1
                if answer.status_code != 200:
                    self.bodies.append(answer.text[:300])


def test_requests_during_the_restore_are_held_not_404(home: Path) -> None:
    first = Server(home).start()
    first.rpc.deploy(nasty_bundle("hello"))
    assert first.stop() == 0  # the formation stops with fsup, still meant to run
    port = free_port()
    server = Server(home)
    # The clients stop before the server does: a request held while fsup's own shutdown stops
    # the formation is answered 503 (it is stopped), which is not what this test is about.
    try:
        with EarlyClients(f"http://127.0.0.1:{port}/api/hello/echo") as clients:
            server.start("--port", str(port))
            wait_for(lambda: clients.statuses[200] >= 8, timeout=30)
    finally:
        assert server.stop() == 0
    assert set(clients.statuses) == {200}, (clients.statuses, clients.bodies[:3])


def test_a_request_released_in_a_restart_backoff_is_told_how_long_is_left(
    server: Server,
) -> None:
    restart = {"policy": "always", "backoff": {"initial": 6, "factor": 1, "max": 6, "jitter": 0}}
    pid = server.rpc.deploy(nasty_bundle("sleepy", restart=restart, proxy={"hold": 1}))["pid"]
    os.kill(pid, signal.SIGKILL)  # after a stable run: restarted at once
    pid = wait_for(lambda: _fresh_pid(server, "sleepy", pid), timeout=20)
    os.kill(pid, signal.SIGKILL)  # within a second of its start: backoff
    wait_for(lambda: server.formation("sleepy")["status"] == "restarting")
    answer = httpx.get(f"{server.url}/api/sleepy/", trust_env=False, timeout=30)
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["details"]["reason"] == "backoff", error
    assert "restart backoff" in error["message"]
    assert 2 <= int(answer.headers["retry-after"]) <= 6, answer.headers
    assert error["details"]["retry_after_s"] == int(answer.headers["retry-after"])


def _fresh_pid(server: Server, formation_id: str, other_than: int) -> int | None:
    shown = server.formation(formation_id)
    fresh = shown["status"] == "running" and shown["healthy"] and shown["pid"] != other_than
    return shown["pid"] if fresh else None

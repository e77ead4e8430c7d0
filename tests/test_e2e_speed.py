"""End-to-end, issue 11: a killed process answers again at once (port and proxy route), and
`serve --deploy` starts its folders side by side."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from helpers import Server, nasty_bundle, wait_for

pytestmark = pytest.mark.e2e

SLOW_SERVICE = """\
import os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

time.sleep(1.5)  # a service that takes a while to come up


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def answers(url: str) -> int | None:
    try:
        got = httpx.get(url, timeout=1, trust_env=False)
    except httpx.HTTPError:
        return None
    return int(got.json()["pid"]) if got.status_code == 200 else None


def test_a_killed_process_answers_again_at_once_on_its_port_and_its_route(
    server: Server,
) -> None:
    # Default health timings (no interval set): the gate probes early, liveness every 10 s.
    first = server.rpc.deploy(nasty_bundle("quick", health={"http": "/health"}))
    time.sleep(1.2)  # a stable run: its first crash is restarted without backoff
    os.kill(first["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    port_url = f"http://127.0.0.1:{first['port']}/whoami"
    route_url = f"{server.url}/api/quick/whoami"
    new = wait_for(lambda: (pid := answers(port_url)) not in (None, first["pid"]) and pid, 5, 0.005)
    on_port = time.monotonic() - killed_at
    wait_for(lambda: answers(route_url) == new, 5, 0.005)
    on_route = time.monotonic() - killed_at
    # Restarted without backoff (it was 0.5 s), and routed as soon as it answers (it was up to
    # one 0.5 s probe interval later). Generous bounds: the machine may be busy.
    assert "restart #1 in 0.00s" in server.log_tail()
    assert on_port < 1.0 and on_route - on_port < 0.3, (on_port, on_route)
    assert server.formation("quick")["restart_count"] == 1


def test_serve_deploy_starts_the_folders_side_by_side(home: Path, tmp_path: Path) -> None:
    folders = tmp_path / "formations"
    names = [f"slow-{i}" for i in range(6)]
    for name in names:
        folder = folders / name
        folder.mkdir(parents=True)
        (folder / "svc.py").write_text(SLOW_SERVICE)
        manifest = {
            "id": name,
            "version": "1.0.0",
            "command": ["python3", "svc.py"],
            "health": {"http": "/", "timeout": 30},
        }
        (folder / "formation.yaml").write_text(json.dumps(manifest))
    began = time.monotonic()
    server = Server(home).start("--deploy", str(folders))
    try:

        def all_running() -> bool:
            listed = server.rpc.call("GET", "/rpc/formations")["formations"]
            running = {f["id"] for f in listed if f["status"] == "running"}
            return running >= set(names)

        wait_for(all_running, timeout=30)
        # One after another, six 1.5 s starts take 9 s at least.
        assert time.monotonic() - began < 6
    finally:
        assert server.stop() == 0

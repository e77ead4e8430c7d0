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

# A service that comes up only once all of its siblings have been started: marked in a shared
# folder (its first argument), it waits for the others' marks (its second: how many).
RENDEZVOUS_SERVICE = """\
import os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

marks, count = sys.argv[1], int(sys.argv[2])
open(os.path.join(marks, os.environ["FORMATION_ID"]), "w").close()
while len(os.listdir(marks)) < count:
    time.sleep(0.05)


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
    port_url = f"http://127.0.0.1:{first['port']}/whoami"
    route_url = f"{server.url}/api/quick/whoami"
    new = wait_for(lambda: (pid := answers(port_url)) not in (None, first["pid"]) and pid, 20)
    wait_for(lambda: answers(route_url) == new, 20)
    # Restarted without backoff (it was 0.5 s), as the log says. How soon it answers and is
    # routed is measured by bench/run.py (crash recovery, port and proxy route), and the gate's
    # probes right after the spawn on virtual time by tests/test_health_schedule.py: a
    # wall-clock bound here failed on a busy machine, not on a regression.
    assert "restart #1 in 0.00s" in server.log_tail()
    assert server.formation("quick")["restart_count"] == 1


def test_serve_deploy_starts_the_folders_side_by_side(home: Path, tmp_path: Path) -> None:
    folders = tmp_path / "formations"
    marks = tmp_path / "marks"
    marks.mkdir()
    names = [f"slow-{i}" for i in range(6)]
    for name in names:
        folder = folders / name
        folder.mkdir(parents=True)
        (folder / "svc.py").write_text(RENDEZVOUS_SERVICE)
        manifest = {
            "id": name,
            "version": "1.0.0",
            "command": ["python3", "svc.py", str(marks), str(len(names))],
            "health": {"http": "/", "timeout": 30},
        }
        (folder / "formation.yaml").write_text(json.dumps(manifest))
    server = Server(home).start("--deploy", str(folders))
    try:

        def all_running() -> bool:
            listed = server.rpc.call("GET", "/rpc/formations")["formations"]
            running = {f["id"] for f in listed if f["status"] == "running"}
            return running >= set(names)

        # Started one after another, each waiting for the last to be running, the first would
        # wait for the others for ever: they run only if all six were started side by side.
        wait_for(all_running, timeout=30)
    finally:
        assert server.stop() == 0

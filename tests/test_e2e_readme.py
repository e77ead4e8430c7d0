"""The README's curl walk-through, run as written against a real fsup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import EXAMPLES, REPO, Server, wait_for

pytestmark = pytest.mark.e2e

SCRIPT = REPO / "examples" / "rpc-curl.sh"


def curl(server: Server, home: Path, *args: str) -> str:
    env = {**os.environ, "MUXI_HOME": str(home), "MUXI_URL": server.url}
    done = subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_readme_curl_walkthrough(server: Server, home: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "hello.tar.gz"
    with tarfile.open(bundle, "w:gz") as archive:
        archive.add(EXAMPLES / "hello", arcname="hello")

    stream = curl(
        server, home, "POST", "/rpc/formations/deploy", str(bundle),
        "-H", "Content-Type: application/gzip", "-H", "Accept: text/event-stream",
    )
    assert "event: progress" in stream and "event: complete" in stream
    assert '"stage": "health_check"' in stream

    listed = json.loads(curl(server, home, "GET", "/rpc/formations"))
    assert [f["id"] for f in listed["formations"]] == ["hello"]
    assert json.loads(curl(server, home, "POST", "/rpc/formations/hello/stop"))["status"] == "stopped"
    assert json.loads(curl(server, home, "POST", "/rpc/formations/hello/start"))["status"] == "running"
    status = json.loads(curl(server, home, "GET", "/rpc/server/status"))
    assert status["formations"]["running"] == 1

    # The update and rollback walk-through.
    update = tmp_path / "hello-1.1.0.tar.gz"
    with tarfile.open(update, "w:gz") as archive:
        archive.add(EXAMPLES.parent / "updates" / "hello-1.1.0", arcname="hello-1.1.0")
    stream = curl(
        server, home, "PUT", "/rpc/formations/hello", str(update),
        "-H", "Content-Type: application/gzip", "-H", "Accept: text/event-stream",
    )
    assert '"stage": "swapping"' in stream and "event: complete" in stream
    greeting = subprocess.run(["curl", "-s", f"{server.url}/api/hello/"], capture_output=True,
                              text=True, check=True).stdout
    assert json.loads(greeting)["message"] == "bonjour from 1.1.0"
    rolled = json.loads(curl(server, home, "POST", "/rpc/formations/hello/rollback"))
    assert rolled["version"] == "1.0.0" and rolled["previous_version"] == "1.1.0"
    logs = json.loads(curl(server, home, "GET", "/rpc/formations/hello/logs?lines=5&stream=stdout"))
    assert logs["lines"] and all(x["stream"] == "stdout" for x in logs["lines"])
    audit = json.loads(curl(server, home, "GET", "/rpc/server/logs?lines=3"))
    assert [e["path"] for e in audit["entries"]][-1] == "/rpc/formations/hello/logs?lines=5&stream=stdout"
    deleted = json.loads(curl(server, home, "DELETE", "/rpc/formations/hello"))
    assert deleted == {"id": "hello", "deleted": True}


def test_serve_deploys_the_example_formations(home: Path) -> None:
    server = Server(home).start("--deploy", str(EXAMPLES))
    try:
        def both_running() -> bool:
            items = server.rpc.call("GET", "/rpc/formations")["formations"]
            return sorted((f["id"], f["status"]) for f in items) == [
                ("flaky", "running"), ("hello", "running")
            ]

        wait_for(both_running, timeout=30)
    finally:
        assert server.stop() == 0
    # A second start neither duplicates nor fails: they are already deployed.
    server.start("--deploy", str(EXAMPLES))
    try:
        wait_for(lambda: server.rpc.call("GET", "/rpc/formations")["total"] == 2)
        assert "already deployed" in wait_for(
            lambda: (log := server.log_tail()).count("already deployed") >= 2 and log
        )
    finally:
        assert server.stop() == 0


def test_readme_search_walkthrough(home: Path) -> None:
    server = Server(home).start("--deploy", str(EXAMPLES))
    try:
        wait_for(lambda: server.rpc.call("GET", "/rpc/formations")["total"] == 2, timeout=30)
        wait_for(lambda: all(f["status"] == "running" for f in
                             server.rpc.call("GET", "/rpc/formations")["formations"]))
        script = f"""
set -euo pipefail
API={server.url}/api/v1
TOKEN=$(curl -s $API/auth/bootstrap | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -s -c {home}/cookies -X POST -H "Authorization: Bearer $TOKEN" $API/session > /dev/null
(timeout 4 curl -s -N -b {home}/cookies $API/events > {home}/events.txt || true) &
sleep 0.5
SEARCH=$(curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
  -d '{{"keyword": "listening on port", "autostart": true}}' $API/searches \\
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["search"]["id"])')
sleep 1
curl -s -H "Authorization: Bearer $TOKEN" "$API/searches/$SEARCH/results?sort=recent"
wait
"""
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              timeout=60, check=True)
        results = json.loads(done.stdout)
        sources = sorted({s for item in results["items"] for s in item["sources"]})
        assert sources == ["flaky", "hello"]
        events = (home / "events.txt").read_text()
        assert "event: search_created" in events and "event: search_completed" in events
    finally:
        assert server.stop() == 0


def test_readme_cli_walkthrough_runs_as_written(home: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("## The CLI", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [line for line in block.strip().splitlines() if " -f " not in line]
    server = Server(home).start("--deploy", str(EXAMPLES))
    try:
        wait_for(lambda: sorted(f["status"] for f in
                                server.rpc.call("GET", "/rpc/formations")["formations"])
                 == ["running", "running"], timeout=30)
        script = "set -euo pipefail\n" + "\n".join(lines)
        script = script.replace(".venv/bin/fsup", f"{sys.executable} -m supervisor")
        script = script.replace("http://127.0.0.1:7890", server.url)
        script = script.replace("-o hello.zip", f"-o {home}/hello.zip")  # not into the repo
        env = {**os.environ, "MUXI_HOME": str(home), "MUXI_URL": server.url}
        done = subprocess.run(["bash", "-c", script], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "bonjour from 1.1.0" in done.stdout
        assert "[log] hello: hello 1.0.0 listening on port" in done.stdout
        assert (home / "hello.zip").exists()
        assert [f["id"] for f in server.rpc.call("GET", "/rpc/formations")["formations"]] == ["hello"]
    finally:
        assert server.stop() == 0

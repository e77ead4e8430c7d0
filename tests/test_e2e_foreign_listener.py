"""End-to-end: a process that is not the formation's holds its port (issue 8, item 5).

The stranger is an HTTP server in this test process that answers every request with 200, so
a health probe alone would call it healthy. fsup must refuse it: PORT_IN_USE naming the port
and this process, the formation not healthy, and the proxy never reaching the stranger.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from helpers import NASTY, Server, main_processes, make_bundle, manifest, nasty_bundle, wait_for

from supervisor.cli.client import ApiError

pytestmark = pytest.mark.e2e

GZIP = {"Content-Type": "application/gzip"}

# A formation that listens only once the file $LISTEN_AFTER exists (then it is nasty `serve`):
# the window in which a stranger can take its port after fsup checked it.
LATE_APP = """\
import os, runpy, sys, time
while not os.path.exists(os.environ["LISTEN_AFTER"]):
    time.sleep(0.05)
sys.argv = ["nasty.py", "serve"]
runpy.run_path("nasty.py", run_name="__main__")
"""


class Stranger:
    """An HTTP server on a given port that answers everything with 200 and records paths."""

    def __init__(self, port: int) -> None:
        seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                seen.append(self.path)
                body = json.dumps({"stranger": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.paths = seen
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def proxied(self) -> list[str]:
        """What reached the stranger other than health probes."""
        return [path for path in self.paths if not path.startswith("/health")]


@contextmanager
def stranger_on(port: int) -> Iterator[Stranger]:
    stranger = Stranger(port)
    stranger.thread.start()
    try:
        yield stranger
    finally:
        stranger.server.shutdown()
        stranger.server.server_close()
        stranger.thread.join(5)


def late_bundle(formation_id: str, version: str, gate: Path) -> bytes:
    doc = manifest(
        formation_id,
        version=version,
        command=["python3", "app.py"],
        env={"LISTEN_AFTER": str(gate)},
    )
    return make_bundle({"formation.yaml": doc, "app.py": LATE_APP, "nasty.py": NASTY.read_text()})


def tops(home: Path, formation_id: str) -> list[psutil.Process]:
    """`main_processes`, polled while processes come and go (one may exit mid-listing)."""
    try:
        return main_processes(home, formation_id)
    except psutil.NoSuchProcess:
        return []


def proxied_get(server: Server, formation_id: str, path: str = "/") -> httpx.Response:
    return httpx.get(f"{server.url}/api/{formation_id}{path}", trust_env=False, timeout=10)


def in_background(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `call()` in a thread; its result or ApiError lands in the returned dict."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except ApiError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    return worker, outcome


def assert_port_in_use(error: ApiError, port: int) -> None:
    assert (error.status, error.code) == (409, "PORT_IN_USE"), error
    assert f"port {port}" in error.message and f"pid {os.getpid()} (" in error.message
    assert "stop that process or free port" in error.message
    assert error.details["port"] == port and error.details["pid"] == os.getpid()
    assert error.details["process_name"] == psutil.Process().name()


def test_start_refuses_a_port_a_stranger_holds(server: Server, home: Path) -> None:
    port = server.rpc.deploy(nasty_bundle("squat"))["port"]
    server.rpc.call("POST", "/rpc/formations/squat/stop")
    with stranger_on(port) as stranger:
        with pytest.raises(ApiError) as info:
            server.rpc.call("POST", "/rpc/formations/squat/start")
        assert_port_in_use(info.value, port)
        assert info.value.details["stage"] == "spawning"
        shown = server.formation("squat")
        assert shown["status"] == "crashed" and shown["healthy"] is not True
        assert shown["pid"] is None and tops(home, "squat") == []
        assert proxied_get(server, "squat").status_code == 503
        assert stranger.paths == []  # not even probed: nothing was spawned
    # The operator freed the port: the formation starts and serves again.
    started = server.rpc.call("POST", "/rpc/formations/squat/start")
    assert started["status"] == "running" and started["port"] == port
    assert proxied_get(server, "squat").json()["pid"] == started["pid"]


def test_a_stranger_that_binds_while_the_formation_starts_fails_the_start(
    server: Server, home: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "listen"
    gate.touch()
    port = server.rpc.deploy(late_bundle("late", "1.0.0", gate))["port"]
    server.rpc.call("POST", "/rpc/formations/late/stop")
    gate.unlink()  # from now on, the formation's process does not listen
    worker, outcome = in_background(lambda: server.rpc.call("POST", "/rpc/formations/late/start"))
    wait_for(lambda: tops(home, "late"))
    with stranger_on(port) as stranger:
        worker.join(30)
        error = outcome["error"]
        assert_port_in_use(error, port)
        assert error.details["stage"] == "health_check"
        wait_for(lambda: not tops(home, "late"), timeout=10)
        shown = server.formation("late")
        assert shown["status"] == "crashed" and shown["healthy"] is not True
        assert proxied_get(server, "late").status_code == 503
        assert stranger.paths and stranger.proxied() == []


def test_update_takes_another_staging_port_when_the_next_one_is_held(
    server: Server, home: Path
) -> None:
    first = server.rpc.deploy(nasty_bundle("blue", version="1.0.0"))
    # The pool hands ports out round-robin: the staging port would be the next one.
    with stranger_on(first["port"] + 1) as stranger:
        done = server.rpc.call(
            "PUT", "/rpc/formations/blue", nasty_bundle("blue", version="1.1.0"), GZIP
        )
        assert done["version"] == "1.1.0"
        assert done["port"] == first["port"] + 2  # the held one skipped
        served = proxied_get(server, "blue").json()
        assert (served["version"], served["pid"]) == ("1.1.0", done["pid"])
        assert stranger.paths == []


def test_a_stranger_on_the_staging_port_fails_the_update_and_the_old_keeps_serving(
    server: Server, home: Path, tmp_path: Path
) -> None:
    first = server.rpc.deploy(nasty_bundle("green", version="1.0.0"))
    worker, outcome = in_background(
        lambda: server.rpc.call(
            "PUT", "/rpc/formations/green", late_bundle("green", "2.0.0", tmp_path / "never"), GZIP
        )
    )
    staging = wait_for(lambda: [p for p in tops(home, "green") if p.pid != first["pid"]])
    staging_port = int(staging[0].environ()["PORT"])
    with stranger_on(staging_port) as stranger:
        worker.join(30)
        error = outcome["error"]
        assert (error.status, error.code) == (409, "PORT_IN_USE")
        assert f"port {staging_port}" in error.message and f"pid {os.getpid()} (" in error.message
        assert "1.0.0 keeps serving" in error.message
        shown = server.formation("green")
        assert (shown["version"], shown["pid"], shown["port"]) == (
            "1.0.0",
            first["pid"],
            first["port"],
        )
        assert shown["versions"] == ["1.0.0"] and shown["update_in_progress"] is False
        assert shown["healthy"] is True
        assert proxied_get(server, "green").json()["version"] == "1.0.0"
        wait_for(lambda: [p.pid for p in tops(home, "green")] == [first["pid"]], timeout=10)
        assert stranger.paths and stranger.proxied() == []

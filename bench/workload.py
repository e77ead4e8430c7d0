"""The workload every runner supervises: N tiny stdlib HTTP services answering /health.

One small Python file, the same for the floor, each peer and fsup, so the figures differ by
the supervisor alone. Each service listens on $PORT and, once bound, writes its port to
`$BENCH_PORTDIR/$BENCH_NAME` (atomically): fsup hands out ports itself, so the bench learns
them from the services rather than from each supervisor's API (asking fsup would load the
thing being measured). `/health` answers the pid, so "answers again after a kill" means a new
process answers, not a late reply of the old one.
"""

from __future__ import annotations

import http.client
import json
import shutil
import time
from pathlib import Path

SERVICE_SOURCE = '''\
"""A benchmark service: /health on $PORT, nothing else."""
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = os.environ["BENCH_NAME"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0" if os.environ.get("BENCH_HTTP10") else "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out in two writes: no 40 ms ACK stall

    def do_GET(self):
        body = json.dumps({"ok": True, "name": NAME, "pid": os.getpid()}).encode()
        self.send_response(200 if self.path.startswith("/health") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler)
server.daemon_threads = True
folder = os.environ["BENCH_PORTDIR"]
tmp = os.path.join(folder, "." + NAME + ".tmp")
with open(tmp, "w") as f:
    f.write(str(server.server_address[1]))
os.replace(tmp, os.path.join(folder, NAME))
server.serve_forever()
'''

SERVICE_PYTHON = (
    "/usr/bin/python3" if Path("/usr/bin/python3").exists() else shutil.which("python3")
)


def names(n: int) -> list[str]:
    return [f"svc-{i:03d}" for i in range(n)]


def write_service(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "svc.py"
    path.write_text(SERVICE_SOURCE)
    return path


def reset_ports(portdir: Path) -> None:
    if portdir.exists():
        shutil.rmtree(portdir)
    portdir.mkdir(parents=True)


def port_of(portdir: Path, name: str) -> int | None:
    try:
        return int((portdir / name).read_text())
    except (OSError, ValueError):
        return None


def get(port: int, path: str = "/health", timeout: float = 0.5) -> tuple[int, dict] | None:
    """One GET on 127.0.0.1:port, a fresh connection; None when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        raw = answer.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        return answer.status, body if isinstance(body, dict) else {}
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def health_pid(portdir: Path, name: str) -> int | None:
    """The pid the service `name` answers /health with, or None if it does not answer."""
    port = port_of(portdir, name)
    if port is None:
        return None
    got = get(port)
    if got and got[0] == 200 and got[1].get("name") == name:
        return int(got[1]["pid"])
    return None


def wait_all(portdir: Path, wanted: list[str], began: float, timeout: float = 600.0) -> float:
    """Seconds from `began` (perf_counter) until every service in `wanted` answers /health."""
    pending = list(wanted)
    deadline = began + timeout
    while pending:
        pending = [name for name in pending if health_pid(portdir, name) is None]
        if not pending:
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{len(pending)} of {len(wanted)} never answered: {pending[:5]}")
        time.sleep(0.005)
    return time.perf_counter() - began


def wait_new_pid(
    portdir: Path, name: str, old_pid: int, began: float, timeout: float = 60.0
) -> float:
    """Seconds from `began` until `name` answers /health from a pid other than `old_pid`."""
    while True:
        pid = health_pid(portdir, name)
        if pid is not None and pid != old_pid:
            return time.perf_counter() - began
        if time.perf_counter() - began > timeout:
            raise TimeoutError(f"{name} did not come back within {timeout}s")
        time.sleep(0.002)

"""fsup-only figures no peer has (issue 11): updates under load, search speed, SSE fan-out.

Each runs against a running fsup with its N formations deployed (the `Fsup` runner), and
each has a baseline measured in the same run where one exists:

- **updates under load**: proxied GETs from a few client threads while one formation is
  updated ten times (blue-green: stage, gate, swap, drain); every failed request is counted.
- **search**: N formations' stdout logs filled with the same lines, a full search run for a
  word on 1 % of them, timed until `complete`; `grep -c` on the same files is the baseline.
- **SSE fan-out**: 1,000 subscribers on `/api/v1/events`; each of 20 `search_created` events
  is timed from the moment its request is sent to the moment each subscriber's socket has
  delivered it (one epoll loop reads them all).
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from supervisor.cli.client import ApiClient  # noqa: E402
from supervisor.storage.formation_logs import stream_path  # noqa: E402
from supervisor.storage.home import Home  # noqa: E402

NEEDLE = "needlebench"
SSE_SUBSCRIBERS = 1000
SSE_EVENTS = 20


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"n": 0}
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": ordered[-1],
    }


def pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return buffer.getvalue()


# -- updates under load ----------------------------------------------------------------------


def updates_under_load(fsup: Any, updates: int, clients: int = 4) -> dict[str, Any]:
    name = fsup.names[0]
    url = f"{fsup.url}/api/{name}/health"
    stop = threading.Event()
    counts = {"sent": 0, "failed": 0}
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(trust_env=False, timeout=10) as http:
            while not stop.is_set():
                try:
                    status = http.get(url).status_code
                    ok = status == 200
                    why = f"HTTP {status}"
                except httpx.HTTPError as exc:
                    ok, why = False, type(exc).__name__
                with lock:
                    counts["sent"] += 1
                    if not ok:
                        counts["failed"] += 1
                        failures.append(why)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    durations = []
    try:
        for index in range(updates):
            folder = fsup.workdir / "updates" / f"{index}" / name
            fsup.write_formation(folder, name)
            manifest = json.loads((folder / "formation.yaml").read_text())
            manifest["version"] = f"1.0.{index + 1}"
            (folder / "formation.yaml").write_text(json.dumps(manifest))
            began = time.monotonic()
            fsup.rpc.call(
                "PUT", f"/rpc/formations/{name}", pack(folder), {"Content-Type": "application/gzip"}
            )
            durations.append(time.monotonic() - began)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    return {
        "updates": updates,
        "requests": counts["sent"],
        "failed": counts["failed"],
        "failures": sorted(set(failures))[:10],
        "update_s": quantiles(durations),
    }


# -- search against grep ---------------------------------------------------------------------


def fill_logs(fsup: Any, mib_each: int) -> list[Path]:
    """The same lines appended to every formation's stdout log; one in a hundred has NEEDLE."""
    lines = []
    for i in range(100):
        word = NEEDLE if i == 42 else "haystack"
        lines.append(f"2026-12-03T20:00:00Z INFO request {i} served {word} in 1.2 ms path=/x/{i}\n")
    block = "".join(lines).encode()
    paths = []
    for name in fsup.names:
        path = stream_path(Home(fsup.home).formation_logs(name), "stdout")
        with path.open("ab") as log:
            for _ in range(mib_each * 1024 * 1024 // len(block)):
                log.write(block)
        paths.append(path)
    return paths


def search_vs_grep(fsup: Any, mib_each: int) -> dict[str, Any]:
    paths = fill_logs(fsup, mib_each)
    total = sum(p.stat().st_size for p in paths)
    grep = shutil.which("grep") or "grep"
    runs = []
    for _ in range(3):
        began = time.monotonic()
        subprocess.run([grep, "-c", NEEDLE, *map(str, paths)], capture_output=True, check=False)
        runs.append(time.monotonic() - began)
    grep_s = statistics.median(runs)
    with ApiClient(fsup.url) as api:
        api.login()
        search = api.call("POST", "/searches", {"keyword": NEEDLE, "mode": "full"})["search"]
        began = time.monotonic()
        api.call("POST", f"/searches/{search['id']}/start")
        deadline = began + 600
        detail: dict[str, Any] = {}
        while time.monotonic() < deadline:
            detail = api.call("GET", f"/searches/{search['id']}")
            if detail["search"]["state"] in ("complete", "error", "stopped"):
                break
            time.sleep(0.01)
        search_s = time.monotonic() - began
        api.call("DELETE", f"/searches/{search['id']}")
    mib = total / 2**20
    return {
        "mib": round(mib, 1),
        "files": len(paths),
        "grep_s": grep_s,
        "grep_mib_s": mib / grep_s,
        "search_s": search_s,
        "search_mib_s": mib / search_s,
        "ratio": grep_s / search_s,
        "state": detail.get("search", {}).get("state"),
        "hits": detail.get("results", {}).get("count"),
    }


# -- SSE fan-out -----------------------------------------------------------------------------


def sse_fanout(fsup: Any, subscribers: int = SSE_SUBSCRIBERS, events: int = SSE_EVENTS) -> Any:
    """Subscribers read with one epoll loop, each socket's arrival time taken at its `recv`
    before any parsing, so the figure is the server's delivery, not the client's own
    scheduling (1,000 client tasks would add their wake-ups to it)."""
    with ApiClient(fsup.url) as api:
        api.login()
        cookie = api._http.cookies.get("rm_session")  # noqa: SLF001 - the bench's own client
        port = int(fsup.url.rsplit(":", 1)[1])
        head = (
            f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Cookie: rm_session={cookie}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        socks = []
        for _ in range(subscribers):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(head)
            socks.append(sock)
        buffers = {sock.fileno(): b"" for sock in socks}
        poller = select.epoll()
        for sock in socks:
            sock.setblocking(False)
            poller.register(sock.fileno(), select.EPOLLIN)
        latencies: list[float] = []
        sent: dict[str, float] = {}
        created: list[str] = []
        try:
            _drain(poller, buffers, lambda: all(b"\r\n\r\n" in b for b in buffers.values()), 60)
            for fd in buffers:
                buffers[fd] = b""
            for index in range(events):
                key = f"ssebench{index}"
                sent[key] = time.monotonic()
                answer = api.call("POST", "/searches", {"keyword": key, "mode": "full"})
                created.append(answer["search"]["id"])
                arrivals = _collect(poller, buffers, key, subscribers, 10.0)
                latencies += [at - sent[key] for at in arrivals]
        finally:
            poller.close()
            for sock in socks:
                sock.close()
            for search_id in created:
                api.call("DELETE", f"/searches/{search_id}")
    return {
        "subscribers": subscribers,
        "events": events,
        "delivered": len(latencies),
        "expected": subscribers * events,
        "latency_s": quantiles(latencies),
    }


def _drain(
    poller: select.epoll, buffers: dict[int, bytes], done: Callable[[], bool], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        for fd, _ in poller.poll(0.1):
            buffers[fd] += os.read(fd, 65536)


def _collect(
    poller: select.epoll, buffers: dict[int, bytes], key: str, count: int, timeout: float
) -> list[float]:
    """When each subscriber's socket delivered the frame naming `key` (time of the `recv`)."""
    marker = f'"keyword": "{key}"'.encode()
    arrivals: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(arrivals) < count and time.monotonic() < deadline:
        for fd, _ in poller.poll(0.1):
            data = os.read(fd, 65536)
            now = time.monotonic()
            buffers[fd] += data
            if fd not in arrivals and marker in buffers[fd]:
                arrivals[fd] = now
                buffers[fd] = b""
    return list(arrivals.values())


def measure(fsup: Any, profile: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, run in (
        ("updates", lambda: updates_under_load(fsup, profile.get("updates", 10))),
        ("search", lambda: search_vs_grep(fsup, profile.get("search_mib", 10))),
        ("sse", lambda: sse_fanout(fsup, profile.get("sse_subscribers", SSE_SUBSCRIBERS))),
    ):
        try:
            out[label] = run()
        except Exception as exc:  # noqa: BLE001 - one figure's failure is reported, not fatal
            out[label] = {"error": f"{type(exc).__name__}: {exc}"}
        say(f"  {label}: {json.dumps(out[label], default=str)[:300]}")
    return out


def main() -> int:
    """Alone: `python bench/fsup_extras.py [N]` deploys N formations and prints the figures."""
    import tempfile  # noqa: PLC0415

    import procs  # noqa: PLC0415
    import workload  # noqa: PLC0415
    from fsup_runner import Fsup  # noqa: PLC0415

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    workdir = Path(tempfile.mkdtemp(prefix="fsb-extras-"))
    fsup = Fsup(workdir, n, 32700, "32400-32699")
    try:
        workload.reset_ports(fsup.portdir)
        began = time.perf_counter()
        fsup.start()
        workload.wait_all(fsup.portdir, fsup.names, began, 300)
        fsup.wait_settled(120)
        print(json.dumps(measure(fsup, {}, lambda t: print(t, flush=True)), indent=1, default=str))
    finally:
        fsup.shutdown()
        procs.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak: proxied GETs while every formation is SIGKILLed again and again (issue 13).

Run: .venv/bin/python bench/proxy_soak.py [--seconds 180] [--formations 5] [--seed 1]
Starts fsup in a temporary home with FORMATIONS copies of the test fixture server (restart
policy always, 50 ms backoff), runs two polling clients per formation against
`/api/{id}/health` through the proxy, and SIGKILLs a random formation's process every 0.5 to
1.5 s (seeded). Prints requests sent, failed (with their answers), kills, held and retried
requests with the hold waits (median, p99: the latency a held request gained), and the
client-side latency of all GETs. Every process is stopped at the end, even on failure.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import Server, formation_processes, nasty_bundle  # noqa: E402

RESTART = {
    "policy": "always",
    "max_restarts": 10000,
    "window": 60,
    "backoff": {"initial": 0.05, "factor": 1, "max": 0.05, "jitter": 0},
}


def client(
    url: str,
    stop: threading.Event,
    tally: Counter[str],
    latencies: list[float],
    failures: list[str],
    lock: threading.Lock,
) -> None:
    with httpx.Client(trust_env=False, timeout=30) as http:
        while not stop.is_set():
            started = time.monotonic()
            try:
                answer = http.get(url)
                outcome = str(answer.status_code)
                detail = answer.text[:200] if answer.status_code != 200 else ""
            except httpx.HTTPError as exc:
                outcome, detail = type(exc).__name__, repr(exc)[:200]
            with lock:
                tally[outcome] += 1
                latencies.append(time.monotonic() - started)
                if detail:
                    failures.append(detail)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--formations", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="fsup-soak-") as tmp:
        home = Path(tmp) / "muxi"
        home.mkdir()
        server = Server(home, port_range="33000-33499").start()
        try:
            run(server, args, rng)
        finally:
            server.stop()
            for proc in formation_processes(home):
                proc.kill()


def run(server: Server, args: argparse.Namespace, rng: random.Random) -> None:
    ids = [f"soak-{n}" for n in range(args.formations)]
    for formation_id in ids:
        server.rpc.deploy(nasty_bundle(formation_id, restart=RESTART))
    stop, lock = threading.Event(), threading.Lock()
    tally: Counter[str] = Counter()
    latencies: list[float] = []
    failures: list[str] = []
    threads = [
        threading.Thread(
            target=client,
            daemon=True,
            args=(f"{server.url}/api/{fid}/health", stop, tally, latencies, failures, lock),
        )
        for fid in ids
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    kills, deadline = 0, time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.5, 1.5))
        pid = server.formation(rng.choice(ids))["pid"]
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            kills += 1
    stop.set()
    for thread in threads:
        thread.join(30)
    status = server.rpc.call("GET", "/rpc/server/status")
    proxy = status["proxy"]
    sent = sum(tally.values())
    failed = sent - tally["200"]
    print(f"{args.seconds:.0f} s, {len(ids)} formations, {len(threads)} clients, seed {args.seed}")
    print(f"kills {kills}; GETs sent {sent}, failed {failed} ({failed / max(sent, 1):.3%})")
    print(
        f"held {proxy['held']} (served {proxy['served']}, expired {proxy['expired']}), "
        f"retried {proxy['retried']} (failed {proxy['retry_failed']})"
    )
    print(f"hold wait: median {proxy['wait_s']['median']} s, p99 {proxy['wait_s']['p99']} s")
    ordered = sorted(latencies)
    print(
        f"all GETs: p50 {statistics.median(ordered) * 1000:.1f} ms, "
        f"p99 {ordered[int(len(ordered) * 0.99)] * 1000:.1f} ms"
    )
    for detail in failures[:10]:
        print("  failure:", detail)


if __name__ == "__main__":
    main()

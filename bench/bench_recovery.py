"""Benchmark: deploy-to-healthy and SIGKILL-to-healthy times against a real fsup.

Run: .venv/bin/python bench/bench_recovery.py
Starts fsup in a temporary home, then, ROUNDS times each:
  deploy    POST a bundle (a tiny Python HTTP server, /health probed every 50 ms) until the
            JSON answer says running and healthy
  recover   SIGKILL the process until fsup reports a new pid, running and healthy (backoff
            initial delay 50 ms, so the figure is mostly fsup's own reaction plus the child's
            start-up)
  python    the same child program started directly until its /health answers: the floor
            that neither figure can beat, measured in the same run
Prints medians and the ratios to the floor.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import NASTY, Server, nasty_bundle, wait_for  # noqa: E402

ROUNDS = 7
HEALTH = {"http": "/health", "interval": 0.05, "timeout": 10}
RESTART = {"backoff": {"initial": 0.05, "factor": 1, "max": 0.05, "jitter": 0}, "max_restarts": 100}


def floor_once(port: int) -> float:
    env = {**os.environ, "PORT": str(port)}
    began = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, str(NASTY), "serve"], env=env, stdout=subprocess.DEVNULL
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False).status_code == 200:
                    return time.perf_counter() - began
            except httpx.HTTPError:
                time.sleep(0.01)
    finally:
        child.kill()
        child.wait()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        server = Server(home, port_range="22000-22999").start()
        deploys, recoveries, floors = [], [], []
        try:
            for i in range(ROUNDS):
                bundle = nasty_bundle(f"bench-{i}", health=HEALTH, restart=RESTART)
                began = time.perf_counter()
                result = server.rpc.deploy(bundle)
                deploys.append(time.perf_counter() - began)
                assert result["healthy"], result
                floors.append(floor_once(22900 + i))

                os.kill(result["pid"], signal.SIGKILL)
                began = time.perf_counter()
                wait_for(
                    lambda fid=result["formation_id"], pid=result["pid"]: (
                        (s := server.formation(fid))["pid"] not in (None, pid)
                        and s["status"] == "running"
                        and s["healthy"]
                    ),
                    interval=0.005,
                )
                recoveries.append(time.perf_counter() - began)
        finally:
            server.stop()
    floor = statistics.median(floors)
    for name, values in (("deploy", deploys), ("recover", recoveries), ("python", floors)):
        median = statistics.median(values)
        print(
            f"{name:8s} median {median * 1000:7.1f} ms  ({median / floor:4.2f}x floor)  "
            f"min {min(values) * 1000:6.1f}  max {max(values) * 1000:6.1f}  n={len(values)}"
        )


if __name__ == "__main__":
    main()

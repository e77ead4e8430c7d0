"""End-to-end: crashes are invisible through the proxy (issue 13).

Clients send GETs through `/api/{id}/` while the formation's process is SIGKILLed again and
again: every GET succeeds, held while the formation restarts or retried after a reset. A
formation stopped by the operator answers 503 at once; one that never comes back releases its
held requests with 503 and `Retry-After` at the bound; a POST in flight at a kill is not sent
again; held requests block neither other formations nor the management API.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from helpers import ClientThreads, Server, nasty_bundle, wait_for

pytestmark = pytest.mark.e2e

QUICK_RESTART = {
    "policy": "always",
    "max_restarts": 1000,
    "window": 60,
    "backoff": {"initial": 0.05, "factor": 1, "max": 0.05, "jitter": 0},
}


def deploy(server: Server, formation_id: str, **extra: object) -> dict:
    return server.rpc.deploy(nasty_bundle(formation_id, restart=QUICK_RESTART, **extra))


def running_pid(server: Server, formation_id: str, other_than: int) -> int | None:
    shown = server.formation(formation_id)
    fresh = shown["status"] == "running" and shown["healthy"] and shown["pid"] != other_than
    return shown["pid"] if fresh else None


class Load(ClientThreads):
    """Threads sending GETs through the proxy until stopped, counting every outcome."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.outcomes: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        super().__init__(url, clients)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    answer = client.get(self.url)
                    status = str(answer.status_code)
                    if answer.status_code != 200:
                        self.failures.append(answer.text[:300])
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                    self.failures.append(repr(exc))
                with self._lock:
                    self.outcomes[status] += 1
                    self.latencies.append(time.monotonic() - started)


def test_every_get_succeeds_while_the_process_is_killed_again_and_again(server: Server) -> None:
    pid = deploy(server, "steady")["pid"]
    kills = 15
    with Load(f"{server.url}/api/steady/slow?ms=2") as load:
        for _ in range(kills):
            time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
            pid = wait_for(lambda old=pid: running_pid(server, "steady", old), timeout=20)
        time.sleep(0.2)
    holding = server.rpc.call("GET", "/rpc/server/status")
    assert set(load.outcomes) == {"200"}, (load.outcomes, load.failures)
    assert load.outcomes["200"] > kills * 5
    summary = httpx.get(
        f"{server.url}/api/v1/routing/summary", trust_env=False, headers=bearer(server)
    ).json()["holding"]
    assert summary["held"] + summary["retried"] >= 1, summary
    assert summary["expired"] == 0 and summary["retry_failed"] == 0, summary
    print(
        f"\nGETs {sum(load.outcomes.values())}, kills {kills}, held {summary['held']}, "
        f"retried {summary['retried']}, failed 0, hold wait {summary['wait_s']}, "
        f"p50 {statistics.median(load.latencies) * 1000:.1f} ms, "
        f"max {max(load.latencies) * 1000:.0f} ms; status {holding['formations']}"
    )


def bearer(server: Server) -> dict[str, str]:
    token = httpx.get(f"{server.url}/api/v1/auth/bootstrap", trust_env=False).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def test_a_stopped_formation_answers_at_once(server: Server) -> None:
    """Not held: answered well within the hold bound (60 s here), without `Retry-After`."""
    deploy(server, "resting", proxy={"hold": 60})
    server.rpc.call("POST", "/rpc/formations/resting/stop")
    try:
        answer = httpx.get(f"{server.url}/api/resting/", trust_env=False, timeout=10)
    except httpx.TimeoutException:
        raise AssertionError("a request to a stopped formation was held") from None
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "FORMATION_NOT_RUNNING"
    assert "retry-after" not in answer.headers


def test_a_formation_that_never_comes_back_releases_held_requests_at_the_bound(
    server: Server, tmp_path: Path
) -> None:
    gate = tmp_path / "healthy"
    gate.touch()
    pid = deploy(server, "fading", env={"GATE_FILE": str(gate)}, proxy={"hold": 1})["pid"]
    gate.unlink()  # from now on it never passes a health check
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: server.formation("fading")["status"] in ("starting", "restarting"))
    started = time.monotonic()
    answer = httpx.get(f"{server.url}/api/fading/", trust_env=False)
    waited = time.monotonic() - started
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    # At the manifest's bound: after it (load only makes it later), and before the default
    # hold of 5 s.
    assert 0.9 < waited < 4.5, waited
    # The management API and other formations are not held up (answered, within a deadline).
    deploy(server, "other")
    assert httpx.get(f"{server.url}/api/other/", trust_env=False, timeout=10).status_code == 200
    assert server.rpc.call("GET", "/rpc/formations")["total"] == 2


def test_a_post_in_flight_at_a_kill_is_not_sent_again(server: Server) -> None:
    pid = deploy(server, "poster")["pid"]
    result: dict[str, httpx.Response] = {}

    def post() -> None:
        result["answer"] = httpx.post(
            f"{server.url}/api/poster/slow?ms=3000", content=b"x", trust_env=False, timeout=30
        )

    thread = threading.Thread(target=post)
    thread.start()
    stdout = server.home / "server" / "logs" / "formations" / "poster" / "1.0.0.log"
    wait_for(  # in flight
        lambda: stdout.exists() and "slow POST /slow?ms=3000 received" in stdout.read_text()
    )
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    assert result["answer"].status_code == 502
    summary = httpx.get(
        f"{server.url}/api/v1/routing/summary", trust_env=False, headers=bearer(server)
    ).json()["holding"]
    assert summary["retried"] == 0

"""End-to-end: the formations' history on a real fsup, after real 5 s ticks (waited for
under a deadline, never slept): the samples of a formation serving proxied requests, the
fleet's last points, the refusals, and a deleted formation forgotten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import api_client, nasty_bundle, serving, wait_for

pytestmark = pytest.mark.e2e


def history(client: httpx.Client, formation_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/formations/{formation_id}/history")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["formation_id"] == formation_id and body["interval_s"] == 5
    return body["samples"]  # type: ignore[no-any-return]


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_the_history_follows_a_serving_formation_and_forgets_it_deleted(tmp_path: Path) -> None:
    with serving(tmp_path, nasty_bundle("alpha")) as server, api_client(server) as client:
        proxied = httpx.Client(base_url=f"{server.url}/api/alpha", trust_env=False, timeout=10)

        def busy_sample() -> list[dict[str, Any]] | None:
            proxied.get("/visit")  # requests through the proxy, between the ticks
            samples = history(client, "alpha")
            serving_ones = [s for s in samples if s["cpu_percent"] is not None]
            if any(s["requests_per_s"] > 0 for s in serving_ones):
                return samples
            return None

        samples = wait_for(busy_sample, timeout=40, interval=0.2)
        proxied.close()
        times = [s["t"] for s in samples]
        assert times == sorted(times) and len(samples) >= 2
        last = samples[-1]
        assert last["rss_bytes"] > 0 and last["cpu_percent"] >= 0 and last["restarts"] == 0

        fleet = client.get("/history", params={"points": 1}).json()
        assert fleet["interval_s"] == 5 and list(fleet["formations"]) == ["alpha"]
        assert len(fleet["formations"]["alpha"]) == 1
        assert set(fleet["formations"]["alpha"][0]) == set(last)
        default = client.get("/history").json()["formations"]["alpha"]
        assert 1 <= len(default) <= 60

        for points in ("0", "721", "x", "-1"):
            refused(client.get("/history", params={"points": points}), 400, "INVALID_REQUEST")
        refused(client.get("/formations/nope/history"), 404, "FORMATION_NOT_FOUND")
        anonymous = httpx.get(f"{server.url}/api/v1/history", trust_env=False)
        refused(anonymous, 401, "UNAUTHORIZED")

        assert client.delete("/formations/alpha").status_code == 200
        refused(client.get("/formations/alpha/history"), 404, "FORMATION_NOT_FOUND")
        wait_for(lambda: client.get("/history").json()["formations"] == {}, timeout=20)

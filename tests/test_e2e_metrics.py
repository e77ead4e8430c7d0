"""End-to-end: `GET /metrics` on a real fsup, read with prometheus_client's own parser (and
checked by `promtool check metrics` where Debian's prometheus package is installed).

After a deploy, some proxied requests and a SIGKILL of the formation's process, the restart
is counted with reason `crash`, the proxy's counters moved, and every label is bounded: no
label names a path, a pid or a time. Without the token the answer is a 401 in the contract's
shape, unless `config.yaml` says `metrics: {public: true}`; OpenMetrics is answered when the
`Accept` asks for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import Server, api_client, nasty_bundle, wait_for
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from supervisor.cli.client import ApiError
from supervisor.runtime.metrics import METHODS, RESTART_REASONS, UPSTREAM_KINDS

pytestmark = pytest.mark.e2e

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# Every label a sample may carry, and what its values may be (None: a formation id).
BOUNDED = {
    "formation": None,
    "version": None,
    "state": {"starting", "running", "stopping", "stopped", "restarting", "crashed", "unknown"},
    "reason": set(RESTART_REASONS),
    "method": {*METHODS, "other"},
    "code": {str(code) for code in range(100, 600)} | {"other"},
    "kind": {*UPSTREAM_KINDS, "update", "rollback"},
    "outcome": {"succeeded", "failed"},
    "result": {"ok", "failed"},
    "le": None,
}


def token_of(server: Server) -> str:
    return (server.home / "server" / "api.token").read_text().strip()


def scrape(server: Server, accept: str | None = None, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if accept:
        headers["Accept"] = accept
    return httpx.get(f"{server.url}/metrics", headers=headers, trust_env=False, timeout=30)


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    """The one sample named `name` whose labels include `labels`."""
    matching = [s for s in found if s.name == name and labels.items() <= s.labels.items()]
    assert len(matching) == 1, f"{name}{labels}: {matching}"
    return matching[0].value


@pytest.fixture
def fleet(server: Server) -> Iterator[Server]:
    server.rpc.deploy(nasty_bundle("alpha"))
    yield server


def test_a_restart_and_proxied_requests_are_counted_with_bounded_labels(fleet: Server) -> None:
    server, token = fleet, token_of(fleet)
    with httpx.Client(base_url=f"{server.url}/api/alpha", trust_env=False, timeout=30) as proxy:
        for _ in range(5):
            assert proxy.get("/echo").status_code == 200
        assert proxy.post("/echo", content=b"x").status_code == 200
        proxy.head("/echo")  # whatever the formation answers, it is counted
    pid = server.formation("alpha")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: server.formation("alpha")["pid"] not in (None, pid), timeout=30)
    wait_for(lambda: server.formation("alpha")["status"] == "running", timeout=30)

    answer = scrape(server, token=token)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(answer.text)
    assert value(found, "fsup_formation_restarts_total", formation="alpha", reason="crash") == 1
    for reason in ("health", "manual", "update"):
        assert value(found, "fsup_formation_restarts_total", formation="alpha", reason=reason) == 0
    requests_ = "fsup_proxy_requests_total"
    assert value(found, requests_, formation="alpha", method="GET", code="200") == 5
    assert value(found, requests_, formation="alpha", method="POST", code="200") == 1
    assert value(found, requests_, formation="alpha", method="HEAD") == 1
    assert value(found, "fsup_proxy_request_duration_seconds_count", formation="alpha") == 7
    assert value(found, "fsup_proxy_requests_in_flight", formation="alpha") == 0
    assert value(found, "fsup_health_checks_total", formation="alpha", result="ok") >= 2
    assert value(found, "fsup_health_check_duration_seconds_count", formation="alpha") >= 2
    assert value(found, "fsup_formation_info", formation="alpha", version="1.0.0") == 1
    assert value(found, "fsup_formation_state", formation="alpha", state="running") == 1
    assert value(found, "fsup_formation_state", formation="alpha", state="crashed") == 0
    assert value(found, "fsup_formation_up", formation="alpha") == 1
    assert value(found, "fsup_formation_resident_memory_bytes", formation="alpha") > 1_000_000
    assert value(found, "fsup_formation_open_fds", formation="alpha") >= 3
    assert value(found, "fsup_formation_start_time_seconds", formation="alpha") > 1.7e9
    assert value(found, "fsup_formation_cpu_seconds_total", formation="alpha") >= 0
    assert value(found, "process_resident_memory_bytes") > 10_000_000  # fsup's own
    assert value(found, "fsup_sse_subscribers") == 0
    assert value(found, "fsup_searches_running") == 0
    for sample in found:
        for label, label_value in sample.labels.items():
            allowed = BOUNDED.get(label, set())
            assert allowed is None or label_value in allowed, f"{sample.name}: {label}"
        if "formation" in sample.labels:
            assert sample.labels["formation"] == "alpha", sample


def test_without_the_token_the_answer_is_401_in_the_contracts_shape(server: Server) -> None:
    for token in (None, "0" * 64):
        answer = scrape(server, token=token)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "UNAUTHORIZED"
    with api_client(server) as api:  # the bearer the API takes is the one /metrics takes
        token = api.headers["Authorization"].removeprefix("Bearer ")
    assert scrape(server, token=token).status_code == 200


def test_metrics_public_opens_it_without_a_token(home: Path) -> None:
    (home / "server").mkdir()
    (home / "server" / "config.yaml").write_text("metrics:\n  public: true\n")
    server = Server(home).start()
    try:
        answer = scrape(server)
        assert answer.status_code == 200
        assert value(samples(answer.text), "fsup_sse_evictions_total") == 0
    finally:
        assert server.stop() == 0


def test_openmetrics_is_answered_when_the_accept_asks_for_it(fleet: Server) -> None:
    # What Prometheus 2.x sends.
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    answer = scrape(fleet, accept=accept, token=token_of(fleet))
    assert answer.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert answer.text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(answer.text)}
    assert families["fsup_formation_restarts"].type == "counter"
    assert families["fsup_proxy_request_duration_seconds"].type == "histogram"
    # An Accept prometheus_client cannot read is answered in the text format, not a 500.
    odd = scrape(fleet, accept="application/openmetrics-text; version=x", token=token_of(fleet))
    assert odd.status_code == 200
    assert odd.headers["content-type"].startswith("text/plain; version=0.0.4")


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run does it)",
)
def test_promtool_finds_nothing_wrong(fleet: Server) -> None:
    with httpx.Client(base_url=f"{fleet.url}/api/alpha", trust_env=False, timeout=30) as proxy:
        assert proxy.get("/echo").status_code == 200
    text = scrape(fleet, token=token_of(fleet)).text
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == "", "promtool's lint found something"


def test_a_host_that_does_not_name_this_server_is_refused_even_with_the_token(
    server: Server,
) -> None:
    """`/metrics` keeps the Host check of fsup's browser-reachable routes (DNS rebinding)."""
    answer = httpx.get(
        f"{server.url}/metrics",
        headers={"Authorization": f"Bearer {token_of(server)}", "Host": "evil.example"},
        trust_env=False,
        timeout=30,
    )
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "FORBIDDEN"


def update(server: Server, bundle: bytes) -> object:
    headers = {"Content-Type": "application/gzip"}
    return server.rpc.call("PUT", "/rpc/formations/alpha", bundle, headers)


def test_updates_are_counted_by_outcome_with_their_duration(fleet: Server) -> None:
    """A good update succeeds (and is a restart of reason `update`); one whose new version
    crashes fails its check and leaves the old one serving."""
    update(fleet, nasty_bundle("alpha", version="1.1.0"))
    with pytest.raises(ApiError):
        update(fleet, nasty_bundle("alpha", mode="crash", version="1.2.0"))
    found = samples(scrape(fleet, token=token_of(fleet)).text)
    updates = "fsup_updates_total"
    assert value(found, updates, formation="alpha", kind="update", outcome="succeeded") == 1
    assert value(found, updates, formation="alpha", kind="update", outcome="failed") == 1
    assert value(found, updates, formation="alpha", kind="rollback", outcome="failed") == 0
    duration = "fsup_update_duration_seconds_count"
    assert value(found, duration, formation="alpha", kind="update") == 2
    assert value(found, "fsup_formation_restarts_total", formation="alpha", reason="update") == 1
    assert value(found, "fsup_formation_info", formation="alpha", version="1.1.0") == 1


def test_first_deploys_are_counted_by_outcome_without_a_formation_label(fleet: Server) -> None:
    """A failed first deploy removes its formation: it is counted fleet-wide, not per id."""
    with pytest.raises(ApiError):
        fleet.rpc.deploy(nasty_bundle("broken", mode="crash"))
    found = samples(scrape(fleet, token=token_of(fleet)).text)
    assert value(found, "fsup_deploys_total", outcome="succeeded") == 1  # alpha
    assert value(found, "fsup_deploys_total", outcome="failed") == 1
    assert value(found, "fsup_deploy_duration_seconds_count") == 2

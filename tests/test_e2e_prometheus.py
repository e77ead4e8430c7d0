"""End-to-end: a real Prometheus (Debian's package) scrapes a real fsup, authenticated as the
README's scrape config says (`authorization` with the token file as `credentials_file`), and
a PromQL query sees a formation's restart counted after its process was SIGKILLed. Skipped
where the `prometheus` binary is absent (.ci/run installs it)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from helpers import Server, nasty_bundle, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus is not installed (Debian: apt-get install prometheus; .ci/run does it)",
    ),
]

SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: fsup
    authorization:
      type: Bearer
      credentials_file: {token_file}
    static_configs:
      - targets: ["{target}"]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def prometheus(server: Server, tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping `server` every second, in its own folder; its URL."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    config = folder / "prometheus.yml"
    token_file = server.home / "server" / "api.token"
    config.write_text(
        SCRAPE_CONFIG.format(token_file=token_file, target=urlsplit(server.url).netloc)
    )
    port = free_port()
    with open(folder / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    """The instant vector `promql` gives now ([] while Prometheus is not up yet)."""
    try:
        answer = httpx.get(
            f"{prometheus}/api/v1/query", params={"query": promql}, trust_env=False, timeout=10
        )
    except httpx.TransportError:
        return []
    return list(answer.json()["data"]["result"]) if answer.status_code == 200 else []


def test_prometheus_scrapes_fsup_and_sees_a_restart(server: Server, prometheus: str) -> None:
    server.rpc.deploy(nasty_bundle("alpha"))
    # The target is up (the bearer token was accepted) before anything happens.
    assert wait_for(lambda: query(prometheus, 'up{job="fsup"} == 1'), timeout=60)
    pid = server.formation("alpha")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: server.formation("alpha")["pid"] not in (None, pid), timeout=30)
    restarts = 'fsup_formation_restarts_total{formation="alpha",reason="crash"} == 1'
    found = wait_for(lambda: query(prometheus, restarts), timeout=60)
    assert found[0]["metric"]["job"] == "fsup"
    assert wait_for(lambda: query(prometheus, 'fsup_formation_up{formation="alpha"} == 1'), 30)

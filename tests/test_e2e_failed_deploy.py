"""End-to-end: a failed first deploy keeps its evidence, and a probe that finds nobody says
what to do; the example formations do not fill their logs with probes.

A real fsup and real processes: the `crash` fixture dies at once with a line on stderr, the
`silent` one runs but never listens. The deploy is refused and the formation is gone (its id
free for the fixed code), yet `fsup logs ID` and `GET .../logs` still show what it said, marked
as the failed deploy's, until the id is deployed again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    NASTY,
    REPO,
    Server,
    api_client,
    example_bundle,
    manifest,
    nasty_bundle,
    wait_for,
)

from supervisor.cli.client import ApiError

pytestmark = pytest.mark.e2e

SAID = "nasty: something went badly wrong"  # what the crash fixture writes to stderr


def fsup(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUXI_HOME": str(server.home), "MUXI_URL": server.url}
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def folder(tmp_path: Path, formation_id: str, mode: str) -> Path:
    where = tmp_path / f"{formation_id}-{mode}"
    where.mkdir()
    (where / "formation.yaml").write_text(manifest(formation_id, mode))
    (where / "nasty.py").write_text(NASTY.read_text())
    return where


def logs(server: Server, formation_id: str) -> dict[str, Any]:
    return server.rpc.call("GET", f"/rpc/formations/{formation_id}/logs")  # type: ignore[no-any-return]


def test_a_failed_first_deploy_keeps_its_log_until_the_id_is_deployed_again(
    server: Server, tmp_path: Path
) -> None:
    failed = fsup(server, "deploy", str(folder(tmp_path, "doomed", "crash")))
    assert failed.returncode == 1
    assert "HEALTH_CHECK_FAILED" in failed.stderr and SAID in failed.stderr  # its stderr tail
    assert "hint: see `fsup logs doomed` for what the process said" in failed.stderr
    assert "(kept until its next deploy)" in failed.stderr and "logs ID" not in failed.stderr

    # The formation is gone: the id is free, and nothing runs.
    with pytest.raises(ApiError) as missing:
        server.formation("doomed")
    assert missing.value.code == "FORMATION_NOT_FOUND"

    # Its log is not: through the CLI, marked as the failed deploy's ...
    shown = fsup(server, "logs", "doomed")
    assert shown.returncode == 0, shown.stderr
    assert SAID in shown.stdout
    assert "(from the failed deploy of doomed 1.0.0 at " in shown.stderr
    # ... and through both APIs, with when and why.
    answer = logs(server, "doomed")
    assert SAID in [line["line"] for line in answer["lines"]]
    kept = answer["failed_deploy"]
    assert (kept["formation_id"], kept["version"], kept["code"]) == (
        "doomed",
        "1.0.0",
        "HEALTH_CHECK_FAILED",
    )
    assert "exited with code 3" in kept["message"] and kept["failed_at"].endswith("Z")
    with api_client(server) as api:
        same = api.get("/formations/doomed/logs")
        assert same.status_code == 200 and same.json()["failed_deploy"] == kept
        # An id with nothing kept is still a 404.
        assert api.get("/formations/never-was/logs").status_code == 404

    # Fixed and deployed again under the same id: it runs, and the old evidence is gone.
    fixed = fsup(server, "deploy", str(folder(tmp_path, "doomed", "serve")))
    assert fixed.returncode == 0, fixed.stderr
    fresh = logs(server, "doomed")
    assert "failed_deploy" not in fresh
    assert SAID not in [line["line"] for line in fresh["lines"]]
    assert not (server.home / "server" / "logs" / "failed-deploys" / "doomed").exists()


def test_a_probe_that_nobody_answers_says_the_program_must_listen_on_port(
    server: Server,
) -> None:
    bundle = nasty_bundle(
        "mute", "silent", health={"http": "/health", "interval": 0.1, "timeout": 1}
    )
    with pytest.raises(ApiError) as info:
        server.rpc.deploy(bundle)
    error = info.value
    assert (error.status, error.code) == (422, "HEALTH_CHECK_FAILED")
    port = int(error.message.rsplit("$PORT (", 1)[1].split(")", 1)[0])
    assert (
        f"GET /health: nothing listens on 127.0.0.1:{port} (connection refused): "
        f"the program must listen on $PORT ({port})"
    ) in error.message
    assert error.details["log_dir"].endswith("/failed-deploys/mute")
    assert logs(server, "mute")["failed_deploy"]["message"] == error.message


def test_the_examples_do_not_log_their_probes(server: Server) -> None:
    """Their start gates probed them (a success ends each gate); a request through the proxy
    is logged after those probes, so once its line is there, any probe's line would be."""
    for name in ("hello", "flaky"):
        assert server.rpc.deploy(example_bundle(name))["status"] == "running"
        answer = httpx.get(f"{server.url}/api/{name}/visit", trust_env=False, timeout=10)
        assert answer.status_code == 200

        def lines(name: str = name) -> list[str]:
            return [line["line"] for line in logs(server, name)["lines"]]

        wait_for(lambda lines=lines: any("GET /visit" in line for line in lines()), 20)
        assert not [line for line in lines() if "/health" in line], lines()

"""End-to-end: blue-green updates and rollbacks, under load, with nothing failing."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import Server, formation_processes, main_processes, nasty_bundle, wait_for

from supervisor.cli.client import ApiError

pytestmark = pytest.mark.e2e

GZIP = {"Content-Type": "application/gzip"}


def update(server: Server, formation_id: str, bundle: bytes) -> dict:
    return server.rpc.call("PUT", f"/rpc/formations/{formation_id}", bundle, GZIP)


def served_version(server: Server, formation_id: str) -> str:
    return httpx.get(f"{server.url}/api/{formation_id}/", trust_env=False).json()["version"]


def test_update_streams_the_seed_stages_and_swaps(server: Server, home: Path) -> None:
    first = server.rpc.deploy(nasty_bundle("blue", version="1.0.0"))
    events = list(
        server.rpc.stream(
            "PUT", "/rpc/formations/blue", nasty_bundle("blue", version="1.1.0"), GZIP
        )
    )
    assert events[-1].event == "complete", events[-1]
    stages = list(dict.fromkeys(e.data["stage"] for e in events[:-1]))
    assert stages == [
        "extracting",
        "validating",
        "resolving_runtime",
        "downloading_sif",
        "pulling_runner",
        "spawning_staging",
        "health_check",
        "swapping",
        "stopping_old",
    ]
    done = events[-1].data
    assert done["version"] == "1.1.0" and done["previous_version"] == "1.0.0"
    assert done["pid"] != first["pid"] and done["port"] != first["port"]
    assert not psutil.pid_exists(first["pid"]) or psutil.Process(first["pid"]).status() == "zombie"
    assert served_version(server, "blue") == "1.1.0"
    shown = server.formation("blue")
    assert shown["versions"] == ["1.0.0", "1.1.0"] and shown["update_in_progress"] is False
    assert [p.pid for p in main_processes(home, "blue")] == [done["pid"]]


def test_version_must_be_strictly_higher(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("steady", version="1.2.0"))
    for version in ("1.2.0", "1.1.9", "0.9.0"):
        with pytest.raises(ApiError) as info:
            update(server, "steady", nasty_bundle("steady", version=version))
        assert (info.value.status, info.value.code) == (409, "VERSION_NOT_HIGHER")
    with pytest.raises(ApiError) as wrong_id:
        update(server, "steady", nasty_bundle("other", version="2.0.0"))
    assert wrong_id.value.code == "INVALID_FORMATION"
    assert server.formation("steady")["versions"] == ["1.2.0"]


def test_unhealthy_update_leaves_the_old_version_serving(server: Server, home: Path) -> None:
    first = server.rpc.deploy(nasty_bundle("sturdy", version="1.0.0"))
    bad = nasty_bundle(
        "sturdy",
        "silent",
        version="2.0.0",
        health={"http": "/health", "interval": 0.1, "timeout": 1},
    )
    with pytest.raises(ApiError) as info:
        update(server, "sturdy", bad)
    assert (info.value.status, info.value.code) == (422, "HEALTH_CHECK_FAILED")
    assert "1.0.0 keeps serving" in info.value.message
    shown = server.formation("sturdy")
    assert shown["pid"] == first["pid"] and shown["version"] == "1.0.0"
    assert shown["versions"] == ["1.0.0"] and shown["update_in_progress"] is False
    assert served_version(server, "sturdy") == "1.0.0"
    assert [p.pid for p in main_processes(home, "sturdy")] == [first["pid"]]
    assert not (home / "server" / "formations" / "sturdy" / "versions" / "2.0.0").exists()


def test_rollback_goes_back_and_runtime_state_follows(server: Server, home: Path) -> None:
    versions = home / "server" / "formations" / "keeper" / "versions"
    server.rpc.deploy(nasty_bundle("keeper", version="1.0.0"))
    with pytest.raises(ApiError) as none:
        server.rpc.call("POST", "/rpc/formations/keeper/rollback")
    assert (none.value.status, none.value.code) == (409, "NO_PREVIOUS_VERSION")
    (versions / "1.0.0" / "data").mkdir()
    (versions / "1.0.0" / "data" / "state.txt").write_text("v1 state")
    (versions / "1.0.0" / "memory.db").write_bytes(b"memory-1")

    update(server, "keeper", nasty_bundle("keeper", version="2.0.0"))
    assert (versions / "2.0.0" / "data" / "state.txt").read_text() == "v1 state"
    assert (versions / "2.0.0" / "memory.db").read_bytes() == b"memory-1"
    (versions / "2.0.0" / "data" / "state.txt").write_text("v2 state")

    events = list(server.rpc.stream("POST", "/rpc/formations/keeper/rollback"))
    assert events[-1].event == "complete" and events[-1].data["version"] == "1.0.0"
    assert {"spawning_staging", "health_check", "swapping", "stopping_old"} <= {
        e.data["stage"] for e in events[:-1]
    }
    assert served_version(server, "keeper") == "1.0.0"
    assert (versions / "1.0.0" / "data" / "state.txt").read_text() == "v2 state"
    assert server.formation("keeper")["versions"] == ["1.0.0", "2.0.0"]


def test_only_the_last_three_versions_are_kept(server: Server, home: Path) -> None:
    server.rpc.deploy(nasty_bundle("layers", version="1.0.0"))
    for version in ("1.1.0", "1.2.0", "1.3.0"):
        update(server, "layers", nasty_bundle("layers", version=version))
    assert server.formation("layers")["versions"] == ["1.1.0", "1.2.0", "1.3.0"]
    kept = sorted(
        p.name for p in (home / "server" / "formations" / "layers" / "versions").iterdir()
    )
    assert kept == ["1.1.0", "1.2.0", "1.3.0"]


def test_second_update_is_refused_and_cancel_aborts(
    server: Server, home: Path, tmp_path: Path
) -> None:
    server.rpc.deploy(nasty_bundle("patient", version="1.0.0"))
    gate = tmp_path / "never"
    slow = nasty_bundle(
        "patient",
        version="2.0.0",
        env={"GATE_FILE": str(gate)},
        health={"http": "/health", "interval": 0.2, "timeout": 60},
    )
    outcome: dict = {}

    def run_update() -> None:
        try:
            update(server, "patient", slow)
        except ApiError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run_update)
    worker.start()
    wait_for(lambda: server.formation("patient")["update_in_progress"])
    with pytest.raises(ApiError) as busy:
        update(server, "patient", nasty_bundle("patient", version="3.0.0"))
    assert (busy.value.status, busy.value.code) == (409, "UPDATE_IN_PROGRESS")
    wait_for(lambda: len(main_processes(home, "patient")) == 2)  # the staging one is up
    cancelled = server.rpc.call("POST", "/rpc/formations/patient/cancel-update")
    assert cancelled["cancelled"] is True
    worker.join(20)
    assert outcome["error"].code == "OPERATION_CANCELLED"
    shown = server.formation("patient")
    assert shown["version"] == "1.0.0" and not shown["update_in_progress"]
    assert len(main_processes(home, "patient")) == 1
    again = server.rpc.call("POST", "/rpc/formations/patient/cancel-update")
    assert again["cancelled"] is False


def test_updates_and_rollback_under_load_fail_no_request(server: Server, home: Path) -> None:
    server.rpc.deploy(nasty_bundle("busy", version="1.0.0"))
    stop = threading.Event()
    results: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def hammer() -> None:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as http:
            while not stop.is_set():
                try:
                    response = http.get("/api/busy/slow?ms=40")
                    response.raise_for_status()
                    with lock:
                        results[response.json()["version"]] += 1
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    with lock:
                        failures.append(repr(exc))

    workers = [threading.Thread(target=hammer) for _ in range(6)]
    for worker in workers:
        worker.start()

    def served(version: str, count: int = 25) -> None:
        """Until `count` more requests have been answered by `version`."""
        with lock:
            done = results[version]
        wait_for(lambda: results[version] >= done + count, timeout=30, interval=0.01)

    try:
        served("1.0.0")
        for version in ("1.1.0", "1.2.0", "1.3.0"):
            update(server, "busy", nasty_bundle("busy", version=version))
            served(version)
        server.rpc.call("POST", "/rpc/formations/busy/rollback")
        served("1.2.0")
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    total = sum(results.values())
    print(f"requests during updates: {total}, by version: {dict(results)}, failed: {len(failures)}")
    assert failures == []
    assert total > 100
    assert set(results) == {"1.0.0", "1.1.0", "1.2.0", "1.3.0"}
    assert served_version(server, "busy") == "1.2.0"
    wait_for(lambda: len(formation_processes(home, "busy")) == 1)


def test_semver_precedence_decides_updates_rollbacks_and_listings(server: Server) -> None:
    """SemVer 2.0.0 (issue 10): any pre-release identifiers, a pre-release below its release,
    numeric identifiers numerically, build metadata ignored (an equal version is not higher)."""
    server.rpc.deploy(nasty_bundle("edges", version="1.0.0-alpha.beta"))
    update(server, "edges", nasty_bundle("edges", version="1.0.0-beta.2"))
    update(server, "edges", nasty_bundle("edges", version="1.0.0-beta.11"))  # 11 > 2
    update(server, "edges", nasty_bundle("edges", version="1.0.0+b1"))  # release > pre-release
    for version in ("1.0.0+b2", "1.0.0", "1.0.0-rc.1", "1.0.0-1"):
        with pytest.raises(ApiError) as info:
            update(server, "edges", nasty_bundle("edges", version=version))
        assert (info.value.status, info.value.code) == (409, "VERSION_NOT_HIGHER"), version
        assert info.value.details["current_version"] == "1.0.0+b1"
    shown = server.formation("edges")
    assert shown["version"] == "1.0.0+b1" and served_version(server, "edges") == "1.0.0+b1"
    # kept: the current one and the two below it, lowest first
    assert shown["versions"] == ["1.0.0-beta.2", "1.0.0-beta.11", "1.0.0+b1"]
    rolled = server.rpc.call("POST", "/rpc/formations/edges/rollback")
    assert (
        rolled["version"] == "1.0.0-beta.11" and served_version(server, "edges") == "1.0.0-beta.11"
    )


def test_nothing_to_roll_back_to_from_a_semver_pre_release(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("lonely", version="1.0.0-alpha.beta"))
    with pytest.raises(ApiError) as none:
        server.rpc.call("POST", "/rpc/formations/lonely/rollback")
    assert (none.value.status, none.value.code) == (409, "NO_PREVIOUS_VERSION")
    assert none.value.details["versions"] == ["1.0.0-alpha.beta"]

"""End-to-end: every error code a client can cause, with the contract's shape, and nothing
half-done left behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import Server, formation_processes, make_bundle, nasty_bundle, wait_for
from port_blocks import PORT_HIGH

from supervisor.cli.client import ApiError, SseEvent
from supervisor.core.hmac_auth import sign

pytestmark = pytest.mark.e2e


def error_of(call) -> ApiError:  # noqa: ANN001 - a zero-argument lambda
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def test_public_endpoints_need_no_signature(server: Server) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "healthy"}
    assert httpx.get(server.url + "/ping").json() == {"message": "pong"}


@pytest.mark.parametrize(
    "tamper",
    [
        "no-headers",
        "wrong-key-id",
        "wrong-signature",
        "old-timestamp",
        "signed-other-path",
        "signed-other-body",
        "bad-timestamp",
    ],
)
def test_unsigned_or_tampered_requests_get_401(server: Server, tamper: str) -> None:
    rpc = server.rpc
    request = rpc.build("POST", "/rpc/formations/nope/stop", b"{}")
    headers = dict(request.headers)
    if tamper == "no-headers":
        for name in ("x-muxi-key-id", "x-muxi-timestamp", "x-muxi-signature"):
            headers.pop(name)
    elif tamper == "wrong-key-id":
        headers["x-muxi-key-id"] = "MUXI_LOCAL_someoneelse"
    elif tamper == "wrong-signature":
        headers["x-muxi-signature"] = "AAAA" + headers["x-muxi-signature"][4:]
    elif tamper == "old-timestamp":
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 400))
        headers["x-muxi-timestamp"] = stamp
        headers["x-muxi-signature"] = sign(
            rpc.secret_key, "POST", b"/rpc/formations/nope/stop", stamp, b"{}"
        )
    elif tamper == "signed-other-path":
        headers["x-muxi-signature"] = sign(
            rpc.secret_key,
            "POST",
            b"/rpc/formations/other/stop",
            headers["x-muxi-timestamp"],
            b"{}",
        )
    elif tamper == "signed-other-body":
        headers["x-muxi-signature"] = sign(
            rpc.secret_key,
            "POST",
            b"/rpc/formations/nope/stop",
            headers["x-muxi-timestamp"],
            b"{ }",
        )
    elif tamper == "bad-timestamp":
        headers["x-muxi-timestamp"] = "yesterday"
    response = httpx.post(server.url + "/rpc/formations/nope/stop", content=b"{}", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "UNAUTHORIZED" and error["message"]
    if tamper == "old-timestamp":
        assert "clock" in error["message"]


def test_signed_query_string_is_part_of_the_signature(server: Server) -> None:
    assert server.rpc.call("GET", "/rpc/formations?verbose=1")["total"] == 0
    request = server.rpc.build("GET", "/rpc/formations?verbose=1")
    headers = dict(request.headers)
    response = httpx.get(server.url + "/rpc/formations?verbose=2", headers=headers)
    assert response.status_code == 401


def test_bad_bundles_are_refused_before_anything_runs(server: Server, home: Path) -> None:
    cases = {
        b"definitely not an archive": "neither",
        make_bundle({"../escape.txt": "x", "formation.yaml": "id: x"}, top=None): "'..'",
        make_bundle({"/etc/evil": "x"}, top=None): "absolute",
        make_bundle({"readme.txt": "no manifest here"}): "formation.yaml",
        b"": "empty",
    }
    for body, words in cases.items():
        error = error_of(lambda b=body: server.rpc.deploy(b))
        assert (error.status, error.code) == (400, "INVALID_BUNDLE"), body[:40]
        assert words in error.message
    assert not any((home / "server" / "staging").iterdir())
    assert server.rpc.call("GET", "/rpc/formations")["total"] == 0


def test_invalid_formation_yaml_names_the_field(server: Server) -> None:
    bundle = nasty_bundle("ok-id", restart={"policy": "sometimes"})
    error = error_of(lambda: server.rpc.deploy(bundle))
    assert (error.status, error.code) == (400, "INVALID_FORMATION")
    assert error.details["field"] == "restart.policy"
    reserved = error_of(lambda: server.rpc.deploy(nasty_bundle("admin")))
    assert "reserved" in reserved.message
    missing = make_bundle(
        {"formation.yaml": "id: nope\nversion: 1.0.0\ncommand: [definitely-not-a-binary]"}
    )
    error = error_of(lambda: server.rpc.deploy(missing))
    assert error.code == "INVALID_FORMATION" and error.details["field"] == "command[0]"


def test_header_id_must_match_the_manifest(server: Server) -> None:
    error = error_of(
        lambda: server.rpc.call(
            "POST",
            "/rpc/formations/deploy",
            nasty_bundle("alpha"),
            {"Content-Type": "application/gzip", "X-Formation-ID": "beta"},
        )
    )
    assert (error.status, error.code) == (400, "INVALID_FORMATION")


def test_wrong_content_type_is_refused(server: Server) -> None:
    error = error_of(
        lambda: server.rpc.call(
            "POST", "/rpc/formations", nasty_bundle("alpha"), {"Content-Type": "text/plain"}
        )
    )
    assert error.code == "INVALID_BUNDLE"


def test_conflicts_and_missing_formations(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("once"))
    exists = error_of(lambda: server.rpc.deploy(nasty_bundle("once")))
    assert (exists.status, exists.code) == (409, "FORMATION_ALREADY_EXISTS")
    running = error_of(lambda: server.rpc.call("POST", "/rpc/formations/once/start"))
    assert (running.status, running.code) == (409, "FORMATION_ALREADY_RUNNING")
    server.rpc.call("POST", "/rpc/formations/once/stop")
    stopped = error_of(lambda: server.rpc.call("POST", "/rpc/formations/once/stop"))
    assert (stopped.status, stopped.code) == (409, "FORMATION_NOT_RUNNING")
    for method, path in [
        ("GET", "/rpc/formations/ghost"),
        ("POST", "/rpc/formations/ghost/start"),
        ("DELETE", "/rpc/formations/ghost"),
    ]:
        missing = error_of(lambda m=method, p=path: server.rpc.call(m, p))
        assert (missing.status, missing.code) == (404, "FORMATION_NOT_FOUND")
    unknown = error_of(lambda: server.rpc.call("GET", "/rpc/nothing-here"))
    assert (unknown.status, unknown.code) == (404, "NOT_FOUND")


def test_unhealthy_deploy_fails_with_422_and_leaves_nothing(server: Server, home: Path) -> None:
    bundle = nasty_bundle(
        "mute", "silent", health={"http": "/health", "interval": 0.1, "timeout": 1}
    )
    events = list(
        server.rpc.stream(
            "POST", "/rpc/formations/deploy", bundle, {"Content-Type": "application/gzip"}
        )
    )
    last = events[-1]
    assert last.event == "error"
    assert last.data["code"] == "HEALTH_CHECK_FAILED" and last.data["stage"] == "health_check"
    assert "not healthy after 1s" in last.data["message"]
    assert not formation_processes(home, "mute")
    assert server.rpc.call("GET", "/rpc/formations")["total"] == 0
    error = error_of(lambda: server.rpc.deploy(bundle))
    assert (error.status, error.code) == (422, "HEALTH_CHECK_FAILED")


def test_body_over_the_limit_gets_413(home: Path) -> None:
    (home / "server").mkdir(parents=True)
    (home / "server" / "config.yaml").write_text("limits:\n  max_body_bytes: 2048\n")
    server = Server(home).start()
    try:
        error = error_of(lambda: server.rpc.deploy(b"\x1f\x8b" + bytes(4096)))
        assert (error.status, error.code) == (413, "PAYLOAD_TOO_LARGE")
    finally:
        assert server.stop() == 0


def test_ports_exhausted_gets_503(home: Path) -> None:
    server = Server(home, port_range=f"{PORT_HIGH}-{PORT_HIGH}").start()
    try:
        server.rpc.deploy(nasty_bundle("first"))
        error = error_of(lambda: server.rpc.deploy(nasty_bundle("second")))
        assert (error.status, error.code) == (503, "PORTS_EXHAUSTED")
        assert server.rpc.call("GET", "/rpc/formations")["total"] == 1
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("interrupt", ["stop", "delete"])
def test_stop_or_delete_interrupts_a_health_check(
    server: Server, home: Path, tmp_path: Path, interrupt: str
) -> None:
    gate = tmp_path / "healthy"
    gate.touch()
    health = {"http": "/health", "interval": 0.2, "timeout": 60}
    server.rpc.deploy(nasty_bundle("gated", env={"GATE_FILE": str(gate)}, health=health))
    server.rpc.call("POST", "/rpc/formations/gated/stop")
    gate.unlink()  # from now on /health answers 503

    events: list[SseEvent] = []
    checking = threading.Event()

    def start() -> None:
        for event in server.rpc.stream("POST", "/rpc/formations/gated/start"):
            events.append(event)
            if event.data.get("stage") == "health_check":
                checking.set()

    starter = threading.Thread(target=start)
    began = time.monotonic()
    starter.start()
    assert checking.wait(20)
    if interrupt == "stop":
        assert server.rpc.call("POST", "/rpc/formations/gated/stop")["status"] == "stopped"
    else:
        assert server.rpc.call("DELETE", "/rpc/formations/gated")["deleted"] is True
    starter.join(20)
    assert not starter.is_alive()
    assert time.monotonic() - began < 15  # far less than the 60 s health timeout
    assert events[-1].event == "error"
    assert events[-1].data["code"] == "OPERATION_CANCELLED"
    wait_for(lambda: not formation_processes(home, "gated"), timeout=5)

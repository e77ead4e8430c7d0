"""End-to-end: MUXI's own Python SDK (`muxi` from PyPI) against a real fsup.

The SDK signs with `Authorization: MUXI-HMAC`; every call whose route the seed defines must
work, its errors must read well, and each tampered part of the header must be refused with
401 in the contract's shape. With `auth.schemes: [signed-headers]` the scheme is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from helpers import Server, nasty_bundle, wait_for
from muxi import ServerClient
from muxi.errors import AuthenticationError, ConflictError, NotFoundError

from supervisor.cli.client import RpcClient
from supervisor.core import muxi_hmac

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _quiet_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """No update notice from the SDK, and no proxy between it and 127.0.0.1."""
    monkeypatch.setenv("MUXI_SDK_VERSION_NOTIFICATION", "0")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def credentials(server: Server) -> tuple[str, str]:
    creds = json.loads((server.home / "server" / "credentials.json").read_text())
    return creds["key_id"], creds["secret_key"]


@contextmanager
def open_sdk(server: Server) -> Iterator[ServerClient]:
    """The SDK's own `__exit__` is defined twice and the second does not close its pool."""
    key_id, secret = credentials(server)
    client = ServerClient(url=server.url, key_id=key_id, secret_key=secret, timeout=60)
    try:
        yield client
    finally:
        client.transport.close()


@pytest.fixture
def sdk(server: Server) -> Iterator[ServerClient]:
    with open_sdk(server) as client:
        yield client


def test_the_sdk_drives_every_seed_route(server: Server, sdk: ServerClient) -> None:
    assert sdk.health() == {"status": "healthy"}
    assert sdk.ping() > 0
    server.rpc.deploy(nasty_bundle("alpha"))
    server.rpc.call(
        "PUT",
        "/rpc/formations/alpha",
        nasty_bundle("alpha", version="1.1.0"),
        {"Content-Type": "application/gzip"},
    )

    status = sdk.status()
    assert status["formations"]["total"] == 1 and status["formations"]["running"] == 1
    listed = sdk.list_formations()
    assert [f["id"] for f in listed["formations"]] == ["alpha"]
    assert sdk.get_formation("alpha")["version"] == "1.1.0"

    httpx.get(
        f"{server.url}/api/alpha/say", params={"stream": "stdout", "text": "a,b,c"}, trust_env=False
    ).raise_for_status()
    wait_for(lambda: "c" in [x["line"] for x in sdk.get_formation_logs("alpha", limit=2)["lines"]])
    assert len(sdk.get_formation_logs("alpha", limit=2)["lines"]) == 2

    assert sdk.stop_formation("alpha")["status"] == "stopped"
    assert sdk.start_formation("alpha")["status"] == "running"
    before = sdk.get_formation("alpha")["pid"]
    restarted = sdk.restart_formation("alpha")
    assert restarted["status"] == "running" and sdk.get_formation("alpha")["pid"] != before
    rolled = sdk.rollback_formation("alpha")
    assert rolled["version"] == "1.0.0"
    assert sdk.get_formation("alpha")["version"] == "1.0.0"
    assert sdk.delete_formation("alpha") == {"id": "alpha", "deleted": True}

    entries = sdk.get_server_logs(limit=3)["entries"]
    assert len(entries) == 3
    assert {e["auth"] for e in entries} == {"muxi-hmac"}
    assert entries[-1]["method"] == "DELETE" and entries[-1]["status"] == 200


def test_sdk_errors_read_well(server: Server, sdk: ServerClient) -> None:
    """The SDK reads `code` and `message` from the top level: the user sees ours."""
    with pytest.raises(NotFoundError) as missing:
        sdk.get_formation("nobody")
    assert missing.value.code == "FORMATION_NOT_FOUND"
    assert missing.value.message == "formation 'nobody' not found"
    assert str(missing.value) == "FORMATION_NOT_FOUND: formation 'nobody' not found"
    server.rpc.deploy(nasty_bundle("alpha"))
    with pytest.raises(ConflictError) as running:
        sdk.start_formation("alpha")
    assert running.value.code == "FORMATION_ALREADY_RUNNING"
    with pytest.raises(ConflictError) as no_previous:
        sdk.rollback_formation("alpha")
    assert no_previous.value.code == "NO_PREVIOUS_VERSION"


def test_deploy_a_gzip_bundle_signed_with_authorization(server: Server) -> None:
    key_id, secret = credentials(server)
    with RpcClient(server.url, key_id, secret, scheme="muxi-hmac") as client:
        request = client.build(
            "POST",
            "/rpc/formations/deploy",
            nasty_bundle("bravo"),
            {"Content-Type": "application/gzip"},
        )
        assert request.headers["Authorization"].startswith("MUXI-HMAC key=")
        assert "X-MUXI-Signature" not in request.headers
        deployed = client.call(
            "POST",
            "/rpc/formations/deploy",
            nasty_bundle("bravo"),
            {"Content-Type": "application/gzip"},
        )
    assert deployed["status"] == "running" and deployed["version"] == "1.0.0"
    server.rpc.call("GET", "/rpc/formations")
    audit = server.rpc.call("GET", "/rpc/server/logs?lines=2")["entries"]
    assert [(e["auth"], e["method"], e["status"]) for e in audit] == [
        ("muxi-hmac", "POST", 201),
        ("hmac", "GET", 200),
    ]


def header(key: str, secret: str, method: str, path: str, now: float | None = None) -> str:
    return muxi_hmac.authorization(key, secret, method, path.encode(), now)


def tampered(key_id: str, secret: str) -> dict[str, dict[str, str]]:
    """Each part of a good `GET /rpc/formations` header changed on its own."""
    path, now = "/rpc/formations", time.time()
    good = header(key_id, secret, "GET", path, now)
    fields = dict(part.strip().split("=", 1) for part in good.split(" ", 1)[1].split(","))
    return {
        "key": {"Authorization": header("someone-else", secret, "GET", path, now)},
        "secret": {"Authorization": header(key_id, "not-the-secret", "GET", path, now)},
        "method": {"Authorization": header(key_id, secret, "POST", path, now)},
        "path": {"Authorization": header(key_id, secret, "GET", "/rpc/server/status", now)},
        "old": {"Authorization": header(key_id, secret, "GET", path, now - 310)},
        "future": {"Authorization": header(key_id, secret, "GET", path, now + 310)},
        "signature": {"Authorization": good[:-6] + "AAAAA="},
        "scheme-name": {"Authorization": good.replace("MUXI-HMAC", "MUXI-HMAC2")},
        "no-timestamp": {
            "Authorization": f"MUXI-HMAC key={key_id}, signature={fields['signature']}"
        },
        "ms-timestamp": {
            "Authorization": good.replace(fields["timestamp"], fields["timestamp"] + "000")
        },
        "twice": {"Authorization": good + f", key={key_id}"},
        "bearer": {"Authorization": "Bearer abc"},
        "both-schemes": {"Authorization": good, "X-MUXI-Key-ID": key_id},
    }


def test_each_tampered_part_is_refused(server: Server) -> None:
    key_id, secret = credentials(server)
    path = "/rpc/formations"
    good = httpx.get(
        server.url + path,
        headers={"Authorization": header(key_id, secret, "GET", path)},
        trust_env=False,
    )
    assert good.status_code == 200
    for name, headers in tampered(key_id, secret).items():
        answer = httpx.get(server.url + path, headers=headers, trust_env=False)
        body = answer.json()
        assert answer.status_code == 401, (name, body)
        assert body["error"]["code"] == "UNAUTHORIZED" and body["code"] == "UNAUTHORIZED", name
        assert body["error"]["message"], name
    both = httpx.get(
        server.url + path, headers=tampered(key_id, secret)["both-schemes"], trust_env=False
    ).json()
    assert "one scheme only" in both["error"]["message"]


def test_the_seed_scheme_alone_when_required(home: Path) -> None:
    (home / "server").mkdir(parents=True)
    (home / "server" / "config.yaml").write_text("auth: {schemes: [signed-headers]}\n")
    server = Server(home).start()
    try:
        with open_sdk(server) as sdk:
            assert sdk.health() == {"status": "healthy"}
            with pytest.raises(AuthenticationError) as refused:
                sdk.list_formations()
        assert refused.value.code == "UNAUTHORIZED"
        assert "muxi-hmac signing scheme is turned off" in refused.value.message
        assert server.rpc.call("GET", "/rpc/formations")["total"] == 0
    finally:
        assert server.stop() == 0

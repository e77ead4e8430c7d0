"""The test-only fault hook: off (and unreachable) unless enabled, strict about its input, and
when armed it fails exactly the next `count` messages of the named actor, like a bug would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import Server, api_client, main_processes, nasty_bundle, wait_for

from actors import faults
from actors.base import Actor, ActorCrashed, Reply
from actors.supervision import Supervisor
from supervisor.core.errors import FsupError
from supervisor.http.faults import parse_body
from supervisor.http.rpc import stored_snapshot
from supervisor.storage.store import Store, VersionRow

pytestmark = pytest.mark.chaos


class Echo(Actor):
    name = "echo"

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        return message


@pytest.fixture
def armed_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(faults, "ENABLED", True)
    yield
    faults.reset()


async def test_an_armed_fault_fails_the_next_messages_then_the_actor_is_back(
    armed_hook: None,
) -> None:
    async with trio.open_nursery() as nursery:
        ref = await Supervisor(nursery).start("echo", Echo)
        faults.arm("echo", 2)
        for _ in range(2):
            with pytest.raises(ActorCrashed, match="InjectedFault"):
                await ref.ask("hello")
        assert await ref.ask("hello") == "hello"
        assert [f["actor"] for f in faults.status()["fired"]] == ["echo", "echo"]
        nursery.cancel_scope.cancel()


async def test_each_fired_fault_is_in_the_ledger_before_it_is_raised(
    armed_hook: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The chaos run SIGKILLs fsup, whose own list of fired faults dies with it: the ledger
    file is written before the raise, so a kill right after cannot lose the record."""
    ledger = tmp_path / "faults.jsonl"
    monkeypatch.setattr(faults, "LEDGER_PATH", str(ledger))
    faults.arm("echo", 2)
    for _ in range(2):
        with pytest.raises(faults.InjectedFault):
            faults.trip("echo")
        assert ledger.read_text().endswith("\n")
    faults.trip("echo")  # disarmed: nothing more is written
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [r["actor"] for r in records] == ["echo", "echo"]
    assert records == faults.status()["fired"]


async def test_the_hook_is_inert_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "ENABLED", False)
    faults.arm("echo", 1)
    try:
        async with trio.open_nursery() as nursery:
            ref = await Supervisor(nursery).start("echo", Echo)
            assert await ref.ask("hello") == "hello"
            nursery.cancel_scope.cancel()
        assert faults.status()["fired"] == []
    finally:
        faults.arm("echo", 0)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b"\xff",
        b"{",
        b'{"actor": "fleet", "count": 1, "extra": 1}',
        b'{"count": 1}',
        b'{"actor": 7}',
        b'{"actor": "fleet "}',
        b'{"actor": "fleet\\n"}',
        b'{"actor": "formation:"}',
        b'{"actor": "formation:A"}',
        b'{"actor": "root"}',
        b'{"actor": "fleet", "count": true}',
        b'{"actor": "fleet", "count": 1.0}',
        b'{"actor": "fleet", "count": -1}',
        b'{"actor": "fleet", "count": 1001}',
        b'{"actor": "fleet", "count": "1"}',
        b'{"actor": "fleet", "actor": "searches"}',
        b"[" * 5000,
        b'{"actor": "fleet", "pad": "' + b"x" * 2000 + b'"}',
    ],
)
def test_a_bad_body_is_refused(body: bytes) -> None:
    with pytest.raises(FsupError) as caught:
        parse_body(body)
    assert caught.value.code == "INVALID_REQUEST"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"actor": "fleet"}, ("fleet", 1)),
        ({"actor": "searches", "count": 3}, ("searches", 3)),
        ({"actor": "formation:web-1", "count": 0}, ("formation:web-1", 0)),
        ({"actor": "search-run:0123456789ab", "count": 1000}, ("search-run:0123456789ab", 1000)),
    ],
)
def test_a_good_body_is_read(body: dict[str, Any], expected: tuple[str, int]) -> None:
    assert parse_body(json.dumps(body).encode()) == expected


def _post(server: Server, body: dict[str, Any]) -> Any:
    request = server.rpc.build("POST", "/rpc/server/faults", json.dumps(body).encode())
    return server.rpc.send(request)


def test_without_the_variable_the_route_does_not_exist(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(faults.ENV_VAR, raising=False)
    server = Server(home).start()
    try:
        answer = _post(server, {"actor": "fleet"})
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "NOT_FOUND"
    finally:
        assert server.stop() == 0


def test_a_formation_fault_restarts_the_actor_and_it_reattaches(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fault fires on the formation actor's next message (a health result, most likely);
    its supervisor restarts it and the new incarnation re-attaches to the running child."""
    monkeypatch.setenv(faults.ENV_VAR, "1")
    server = Server(home).start()
    try:
        first = server.rpc.deploy(nasty_bundle("target"))
        bad = _post(server, {"actor": "formation:target", "count": 7, "x": 1})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_REQUEST"
        assert _post(server, {"actor": "formation:target"}).json() == {
            "actor": "formation:target",
            "armed": 1,
        }
        wait_for(lambda: server.rpc.call("GET", "/rpc/server/faults")["fired"])
        after = wait_for(lambda: (s := server.formation("target"))["healthy"] is True and s)
        assert (after["status"], after["pid"]) == ("running", first["pid"])
        assert [p.pid for p in main_processes(home, "target")] == [first["pid"]]
        assert server.rpc.call("GET", "/rpc/server/faults")["armed"] == {}
    finally:
        server.rpc.call("POST", "/rpc/formations/target/stop")
        assert server.stop() == 0, server.log_tail()


@pytest.mark.parametrize(
    ("actor", "path"),
    [
        ("fleet", "/rpc/formations"),
        ("searches", "/api/v1/searches"),
    ],
)
def test_a_root_actor_fault_is_answered_internal_and_fsup_survives(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    actor: str,
    path: str,
) -> None:
    """Issue 8: an unexpected exception in any actor is answered INTERNAL and the actor is
    restarted; nothing a client does can make fsup exit. (Neither actor gets messages of its
    own in a quiet server, so the request is the one that meets the fault.)"""
    monkeypatch.setenv(faults.ENV_VAR, "1")
    server = Server(home).start()
    try:
        first = server.rpc.deploy(nasty_bundle("bystander"))
        client = api_client(server)
        assert client.post("/searches", json={"keyword": "serving"}).status_code == 201

        def get() -> Any:
            if path.startswith("/rpc/"):
                return server.rpc.send(server.rpc.build("GET", path))
            return client.get(path.removeprefix("/api/v1"))

        _post(server, {"actor": actor})
        hit = get()
        assert (hit.status_code, hit.json()["error"]["code"]) == (500, "INTERNAL"), hit.text
        assert get().status_code == 200, server.log_tail()
        assert server.proc is not None and server.proc.poll() is None, server.log_tail()
        assert server.formation("bystander")["pid"] == first["pid"]
        assert len(client.get("/searches").json()["searches"]) == 1
        client.close()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.rpc.call("POST", "/rpc/formations/bystander/stop")
            assert server.stop() == 0, server.log_tail()
        else:
            server.stop()
            for proc in main_processes(home, "bystander"):
                proc.kill()  # fsup died: its child would outlive the test


def test_a_formation_that_does_not_answer_is_listed_as_the_store_knows_it(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listing does not wait for a formation actor that fails (or is too busy to answer): its
    entry is filled from the store, with every key of a snapshot, `status: unknown` and
    `stale: true`. (A process health check, every 60 s, keeps the actor quiet, so the fault
    meets the listing's message.)"""
    monkeypatch.setenv(faults.ENV_VAR, "1")
    server = Server(home).start()
    try:
        first = server.rpc.deploy(
            nasty_bundle("quiet", description="a quiet one", health={"interval": 60, "timeout": 10})
        )
        normal = server.rpc.call("GET", "/rpc/formations")["formations"]
        assert _post(server, {"actor": "formation:quiet"}).json()["armed"] == 1
        listed = server.rpc.call("GET", "/rpc/formations")
        assert server.rpc.call("GET", "/rpc/server/faults")["fired"], "the fault did not fire"
        (entry,) = listed["formations"]
        assert set(entry) == set(normal[0]) | {"stale"}
        assert entry["stale"] is True and entry["status"] == "unknown"
        assert {
            k: entry[k]
            for k in (
                "id",
                "version",
                "description",
                "port",
                "pid",
                "desired",
                "versions",
                "created_at",
            )
        } == {
            "id": "quiet",
            "version": first["version"],
            "description": "a quiet one",
            "port": first["port"],
            "pid": first["pid"],
            "desired": "running",
            "versions": [first["version"]],
            "created_at": normal[0]["created_at"],
        }
        assert entry["healthy"] is None and "did not answer" in entry["last_error"]
        assert entry["uptime_s"] >= 0
        again = wait_for(
            lambda: (
                (f := server.rpc.call("GET", "/rpc/formations")["formations"])
                and f[0]["status"] == "running"
                and f[0]
            )
        )
        assert "stale" not in again and again["pid"] == first["pid"]
    finally:
        _post(server, {"actor": "formation:quiet", "count": 0})
        server.rpc.call("POST", "/rpc/formations/quiet/stop")
        assert server.stop() == 0, server.log_tail()


def test_the_stored_entry_of_an_unreadable_or_deleted_formation(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    try:
        store.insert_formation(
            "odd",
            8001,
            VersionRow("odd", "1.0.0", b"{not yaml: [", str(tmp_path), "2026-01-01T00:00:00Z"),
        )
        entry = stored_snapshot(store, "odd")
        assert (entry["description"], entry["pid"], entry["uptime_s"]) == ("", None, None)
        assert (entry["desired"], entry["versions"], entry["stale"]) == ("stopped", ["1.0.0"], True)
        assert stored_snapshot(store, "gone") == {"id": "gone", "status": "unknown", "stale": True}
    finally:
        store.close()

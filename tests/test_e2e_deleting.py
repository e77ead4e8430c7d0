"""End-to-end: a formation being deleted stays visible and cannot be changed, and a delete
survives a SIGKILL of fsup (review of issue 17's merged removal).

A stubborn formation ignores SIGTERM, so its delete takes its whole stop timeout (5 s here):
during it, every read shows the formation (`deleting: true`, its real `status`, its live pid)
and every change answers 409 `FORMATION_BUSY` ("being deleted; retry when it is gone", with
`Retry-After`); a second delete waits for the first and answers the same; afterwards every
read is a 404 and no process is left. Before, it was a 404 from the first second while its
process still ran and held its port, and a deploy of the same id was told to PUT or delete
what answered 404. A delete cut by a SIGKILL of fsup is resumed by the next fsup on the home.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    Server,
    api_client,
    formation_processes,
    main_processes,
    nasty_bundle,
    wait_for,
)

from supervisor.cli.client import ApiError, RpcClient

pytestmark = pytest.mark.e2e

GZIP = {"Content-Type": "application/gzip"}
BUSY = "is being deleted; retry when it is gone"


def _client(server: Server) -> RpcClient:
    assert server.client is not None
    return RpcClient(server.url, server.client.key_id, server.client.secret_key, timeout=60)


def _delete_in_background(server: Server, formation_id: str) -> tuple[threading.Thread, dict]:
    answer: dict[str, Any] = {}

    def delete() -> None:
        try:
            with _client(server) as rpc:
                answer["value"] = rpc.call("DELETE", f"/rpc/formations/{formation_id}")
        except (ApiError, httpx.HTTPError) as exc:
            answer["error"] = exc

    thread = threading.Thread(target=delete, daemon=True)
    thread.start()
    return thread, answer


def _deleting(server: Server, formation_id: str) -> dict[str, Any] | None:
    snapshot = server.formation(formation_id)
    return snapshot if snapshot.get("deleting") else None


def _refused(call: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def _status(server: Server, formation_id: str) -> int:
    try:
        server.formation(formation_id)
    except ApiError as exc:
        return exc.status
    return 200


def _stored(home: Path, formation_id: str) -> Any:
    db = sqlite3.connect(f"file:{home / 'server' / 'state.db'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT id FROM formations WHERE id = ?", (formation_id,)).fetchone()
    finally:
        db.close()


def test_a_formation_being_deleted_is_shown_and_cannot_be_changed(
    server: Server, home: Path
) -> None:
    fid = "del-stubborn"
    pid = server.rpc.deploy(nasty_bundle(fid, mode="stubborn", stop={"timeout": 5}))["pid"]
    thread, first = _delete_in_background(server, fid)
    shown = wait_for(lambda: _deleting(server, fid), timeout=10)
    # Reads: the formation as it is, its process still stopping.
    assert shown["status"] == "stopping" and shown["pid"] == pid, shown
    assert [p.pid for p in main_processes(home, fid)] == [pid]
    listed = {f["id"]: f for f in server.rpc.call("GET", "/rpc/formations")["formations"]}
    assert listed[fid]["deleting"] is True and listed[fid]["pid"] == pid
    with api_client(server) as api:
        one = api.get(f"/formations/{fid}")
        assert one.status_code == 200 and one.json()["deleting"] is True
        api_list = {f["id"]: f for f in api.get("/formations").json()["formations"]}
        assert api_list[fid]["deleting"] is True
        nodes = api.get("/nodes").json()["nodes"]
        assert [n["pid"] for n in nodes if n["formation_id"] == fid] == [pid]
        # Changes: 409 FORMATION_BUSY, with when to retry.
        restart = api.post(f"/formations/{fid}/restart")
        assert restart.status_code == 409, restart.text
        assert restart.json()["code"] == "FORMATION_BUSY" and BUSY in restart.json()["message"]
        assert int(restart.headers["Retry-After"]) >= 1
        for call in (
            lambda: server.rpc.call("POST", f"/rpc/formations/{fid}/restart"),
            lambda: server.rpc.call("POST", f"/rpc/formations/{fid}/start"),
            lambda: server.rpc.call("POST", f"/rpc/formations/{fid}/stop"),
            lambda: server.rpc.call("POST", f"/rpc/formations/{fid}/rollback"),
            lambda: server.rpc.deploy(nasty_bundle(fid, version="1.1.0")),
            lambda: server.rpc.call(
                "PUT", f"/rpc/formations/{fid}", nasty_bundle(fid, version="1.2.0"), GZIP
            ),
        ):
            error = _refused(call)
            assert (error.status, error.code) == (409, "FORMATION_BUSY"), error
            assert BUSY in str(error)
        # A second delete waits for the first and answers the same.
        second = api.delete(f"/formations/{fid}")
        assert second.status_code == 200 and second.json() == {"id": fid, "deleted": True}
        thread.join(30)
        assert first.get("value") == {"id": fid, "deleted": True}, first
        # Gone: 404 everywhere, no process, no row.
        assert api.get(f"/formations/{fid}").status_code == 404
        assert api.post(f"/formations/{fid}/restart").status_code == 404
        assert fid not in {f["id"] for f in api.get("/formations").json()["formations"]}
    assert _refused(lambda: server.formation(fid)).status == 404
    assert not formation_processes(home, fid) and _stored(home, fid) is None


def test_a_delete_cut_by_a_sigkill_of_fsup_is_resumed_by_the_next_fsup(
    server: Server, home: Path
) -> None:
    fid = "del-killed"
    pid = server.rpc.deploy(nasty_bundle(fid, mode="stubborn", stop={"timeout": 10}))["pid"]
    thread, _ = _delete_in_background(server, fid)
    wait_for(lambda: _deleting(server, fid), timeout=10)
    server.kill()  # SIGKILL, during the stop (10 s: the process ignores SIGTERM)
    thread.join(30)
    assert [p.pid for p in main_processes(home, fid)] == [pid]  # outlived fsup
    server.start()
    # Shown as being deleted (before: as running, adopted), its process stopping; then gone.
    shown = server.formation(fid)
    assert shown["deleting"] is True and shown["pid"] == pid, shown
    wait_for(lambda: _status(server, fid) == 404, timeout=40)
    assert _stored(home, fid) is None
    wait_for(lambda: not formation_processes(home, fid), timeout=10)
    assert "resuming the delete of del-killed interrupted by a restart of fsup" in (
        server.log_tail() + (home / "server" / "logs" / "fsup.log").read_text(errors="replace")
    )

"""End-to-end: a stored formation that no longer loads is kept, listed and repairable; a
deploy of the same id never deletes its files."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest
from helpers import (
    NASTY,
    Server,
    formation_processes,
    make_bundle,
    manifest,
    nasty_bundle,
    wait_for,
)

from supervisor.cli.client import ApiError

pytestmark = pytest.mark.e2e


def _break_stored_manifest(home: Path, formation_id: str) -> None:
    db = sqlite3.connect(home / "server" / "state.db")
    with db:
        db.execute(
            "UPDATE versions SET manifest = ? WHERE formation_id = ?",
            (b"id: [this is not a formation", formation_id),
        )
    db.close()


def _files(home: Path, formation_id: str) -> set[str]:
    root = home / "server" / "formations" / formation_id
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_an_unrestorable_formation_is_kept_and_can_be_updated(home: Path) -> None:
    server = Server(home).start()
    try:
        server.rpc.deploy(nasty_bundle("keepme"))
        version_dir = home / "server" / "formations" / "keepme"
        (next(version_dir.rglob("nasty.py")).parent / "data").mkdir()
        (next(version_dir.rglob("nasty.py")).parent / "data" / "precious.txt").write_text("42")
        assert server.stop(signal.SIGTERM) == 0
        _break_stored_manifest(home, "keepme")
        before = _files(home, "keepme")

        server.start()
        shown = wait_for(lambda: server.formation("keepme"))
        assert shown["status"] == "crashed"
        assert "could not be restored" in shown["last_error"]
        assert [f["id"] for f in server.rpc.call("GET", "/rpc/formations")["formations"]] == [
            "keepme"
        ]

        with pytest.raises(ApiError) as refused:
            server.rpc.deploy(nasty_bundle("keepme"))
        assert (refused.value.status, refused.value.code) == (409, "FORMATION_ALREADY_EXISTS")
        with pytest.raises(ApiError) as start:
            server.rpc.call("POST", "/rpc/formations/keepme/start")
        assert start.value.code == "INVALID_FORMATION", start.value.message
        assert "could not be restored" in start.value.message
        assert _files(home, "keepme") >= before, "nothing of the formation was removed"
        assert server.rpc.call("GET", "/rpc/server/status")["formations"]["crashed"] == 1

        updated = server.rpc.call(
            "PUT",
            "/rpc/formations/keepme",
            nasty_bundle_version("keepme", "1.1.0"),
            {"Content-Type": "application/gzip"},
        )
        assert updated["status"] == "running" and updated["version"] == "1.1.0"
        carried = next((home / "server" / "formations" / "keepme").rglob("1.1.0/data/precious.txt"))
        assert carried.read_text() == "42"
        server.rpc.call("DELETE", "/rpc/formations/keepme")
        assert not (home / "server" / "formations" / "keepme").exists()
        assert not formation_processes(home)
    finally:
        assert server.stop() == 0


def nasty_bundle_version(formation_id: str, version: str) -> bytes:
    return make_bundle(
        {"formation.yaml": manifest(formation_id, version=version), "nasty.py": NASTY.read_text()}
    )

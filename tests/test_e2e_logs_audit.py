"""End-to-end: formation logs (tail, both streams, follow across rotation and restarts),
download, the audit trail and server status. The logs tests read what the log keeper wrote
(`<version>.log`, each line with its time)."""

from __future__ import annotations

import io
import os
import signal
import threading
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import Server, nasty_bundle, wait_for
from log_kit import KeeperFiles, at
from port_blocks import PORT_RANGE

from supervisor.cli.client import ApiError, SseEvent

pytestmark = pytest.mark.e2e


def say(server: Server, formation_id: str, stream: str, *lines: str) -> None:
    httpx.get(
        f"{server.url}/api/{formation_id}/say",
        params={"stream": stream, "text": ",".join(lines)},
        trust_env=False,
    ).raise_for_status()


def lines_of(server: Server, formation_id: str, query: str) -> list[dict]:
    return server.rpc.call("GET", f"/rpc/formations/{formation_id}/logs?{query}")["lines"]


def test_logs_tail_both_streams(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("talker"))
    say(server, "talker", "stdout", "out-1", "out-2")
    say(server, "talker", "stderr", "err-1")
    out = wait_for(
        lambda: (
            (got := lines_of(server, "talker", "stream=stdout&lines=1000"))
            and "out-2" in [x["line"] for x in got]
            and got
        )
    )
    assert {x["stream"] for x in out} == {"stdout"}
    assert any(x["line"].startswith("serving on") for x in out)
    err = lines_of(server, "talker", "stream=stderr")
    assert [x["line"] for x in err] == ["err-1"]
    assert err[0]["ts"].endswith("Z") and err[0]["version"] == "1.0.0"  # the keeper's time
    assert len(lines_of(server, "talker", "lines=2")) == 2  # in all, not per stream
    every = lines_of(server, "talker", "lines=1000")  # both streams, merged by time
    said = [(x["stream"], x["line"]) for x in every if x["line"] in ("out-1", "out-2", "err-1")]
    assert said == [("stdout", "out-1"), ("stdout", "out-2"), ("stderr", "err-1")]
    stamps = [x["ts"] for x in every]
    assert stamps == sorted(stamps)
    for query in ("lines=-1", "lines=x", "stream=both", "follow=maybe"):
        with pytest.raises(ApiError) as info:
            lines_of(server, "talker", query)
        assert (info.value.status, info.value.code) == (400, "INVALID_REQUEST")
    with pytest.raises(ApiError) as missing:
        lines_of(server, "nobody", "lines=1")
    assert missing.value.code == "FORMATION_NOT_FOUND"


def test_follow_survives_rotation_and_restart(home: Path) -> None:
    (home / "server").mkdir(parents=True)
    (home / "server" / "config.yaml").write_text("limits: {log_max_bytes: 2000, log_backups: 2}\n")
    server = Server(home).start()
    try:
        first = server.rpc.deploy(nasty_bundle("chatty"))
        say(server, "chatty", "stderr", "ready")
        seen: list[SseEvent] = []
        done = threading.Event()

        def follow() -> None:
            for event in server.rpc.stream(
                "GET", "/rpc/formations/chatty/logs?follow=true&stream=stderr&lines=1"
            ):
                seen.append(event)
                if event.data.get("line") == "last":
                    break
            done.set()

        reader = threading.Thread(target=follow)
        reader.start()
        wait_for(lambda: seen)  # the history line: the follow is under way
        assert seen[0].data["line"] == "ready" and seen[0].data["version"] == "1.0.0"
        del seen[0]
        expected = []
        for batch in range(10):  # about 6 KB: several rotations at 2000 bytes
            lines = [f"batch{batch:02d}-line{i:02d}-" + "x" * 40 for i in range(10)]
            say(server, "chatty", "stderr", *lines)
            expected += lines
        wait_for(lambda: len([e for e in seen if e.data["line"] in expected]) == len(expected))
        os.kill(first["pid"], signal.SIGKILL)
        wait_for(
            lambda: (
                (s := server.formation("chatty"))["status"] == "running"
                and s["pid"] != first["pid"]
                and s["healthy"]
            )
        )
        say(server, "chatty", "stderr", "after-restart", "last")
        assert done.wait(20)
        reader.join(5)
        got = [e.data["line"] for e in seen]
        assert got[: len(expected)] == expected  # in order, nothing lost across rotations
        assert got[-2:] == ["after-restart", "last"]
        assert all(e.event == "log" and e.data["stream"] == "stderr" and e.data["ts"] for e in seen)
        stamps = [e.data["ts"] for e in seen]
        assert stamps == sorted(stamps)  # the keeper's times, from the files
        log_dir = home / "server" / "logs" / "formations" / "chatty"
        assert (log_dir / "1.0.0.log.1").exists()  # rotated by the keeper, by renaming
        assert not (log_dir / "1.0.0.log.3").exists()
    finally:
        assert server.stop() == 0


def test_logs_answer_and_follow_a_versions_cri_file(server: Server, home: Path) -> None:
    """Files written by hand as the keeper writes them, beside the formation's own: the tail
    and the follow give their lines with the file's time and version, fragments joined."""
    server.rpc.deploy(nasty_bundle("scribe"))
    log_dir = home / "server" / "logs" / "formations" / "scribe"
    keeper = KeeperFiles(log_dir, "9.9.9")
    keeper.line(at(1), "stderr", "by hand")
    mine = [x for x in lines_of(server, "scribe", "lines=1000") if x["version"] == "9.9.9"]
    assert mine == [
        {
            "ts": "2026-12-06T13:00:01.000000Z",
            "stream": "stderr",
            "line": "by hand",
            "version": "9.9.9",
        }
    ]
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def follow() -> None:
        for event in server.rpc.stream("GET", "/rpc/formations/scribe/logs?follow=true&lines=1"):
            seen.append(event.data)  # the first: the history, read after the follow began
            if event.data["line"] == "last":
                break
        done.set()

    reader = threading.Thread(target=follow)
    reader.start()
    wait_for(lambda: seen)
    keeper.partial(at(2), "stdout", "who")
    keeper.line(at(3), "stderr", "meanwhile")
    keeper.line(at(4), "stdout", "le")
    keeper.line(at(5), "stdout", "last")
    assert done.wait(20)
    reader.join(5)
    # Sorted: "whole" is timed at its first fragment, and comes when it ends (a look that
    # saw "who" but not yet "le" gave "meanwhile" first).
    assert sorted((x["ts"], x["line"]) for x in seen[1:] if x["version"] == "9.9.9") == [
        ("2026-12-06T13:00:02.000000Z", "whole"),
        ("2026-12-06T13:00:03.000000Z", "meanwhile"),
        ("2026-12-06T13:00:05.000000Z", "last"),
    ]


def test_download_with_and_without_runtime_state(server: Server, home: Path) -> None:
    server.rpc.deploy(nasty_bundle("packed"))
    version_dir = home / "server" / "formations" / "packed" / "versions" / "1.0.0"
    (version_dir / "data").mkdir()
    (version_dir / "data" / "notes.txt").write_text("keep me")
    (version_dir / "memory.db").write_bytes(b"sqlite?")

    def names(query: str) -> tuple[set[str], httpx.Response]:
        response = server.rpc.send(
            server.rpc.build("GET", f"/rpc/formations/packed/download{query}")
        )
        assert response.status_code == 200, response.text
        return set(zipfile.ZipFile(io.BytesIO(response.content)).namelist()), response

    plain, response = names("")
    assert plain == {"formation.yaml", "nasty.py"}
    assert response.headers["content-type"] == "application/zip"
    assert 'filename="packed-1.0.0.zip"' in response.headers["content-disposition"]
    with_db, _ = names("?db=true")
    assert with_db == {"formation.yaml", "nasty.py", "memory.db", "data/notes.txt"}


def test_audit_records_every_rpc_call(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("watched"))
    server.rpc.call("GET", "/rpc/formations/watched")
    httpx.get(server.url + "/rpc/formations", headers={"X-MUXI-Key-ID": "intruder"})
    with pytest.raises(ApiError):
        server.rpc.call("POST", "/rpc/formations/watched/start")
    entries = server.rpc.call("GET", "/rpc/server/logs?lines=10")["entries"]
    calls = [(e["method"], e["path"], e["status"]) for e in entries]
    assert calls == [
        ("POST", "/rpc/formations/deploy", 201),
        ("GET", "/rpc/formations/watched", 200),
        ("GET", "/rpc/formations", 401),
        ("POST", "/rpc/formations/watched/start", 409),
    ]
    assert entries[0]["key_id"] == server.rpc.key_id and entries[2]["key_id"] == "intruder"
    assert all(e["remote_addr"] == "127.0.0.1" and e["duration_ms"] >= 0 for e in entries)
    assert entries[0]["duration_ms"] > entries[1]["duration_ms"]  # the deploy waited for health


def test_server_status(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("one"))
    server.rpc.deploy(nasty_bundle("two"))
    server.rpc.call("POST", "/rpc/formations/two/stop")
    status = server.rpc.call("GET", "/rpc/server/status")
    assert status["formations"] == {"total": 2, "running": 1, "stopped": 1, "crashed": 0}
    assert status["ports"] == {"range": PORT_RANGE, "allocated": 2, "available": 498}
    assert status["server_id"] and status["version"] and status["uptime_s"] > 0

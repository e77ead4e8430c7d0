"""End-to-end: every line stamped, in order, never lost (the log keeper, issue 19 item 1).

A real fsup, real children writing through the home's log keeper: lines alternated between
stdout and stderr come back in sequence with their times; lines written while fsup is
SIGKILLed come back after its restart with the time they were written; a child logging fast
while fsup is SIGSTOPped never blocks; nothing is lost across rotations; a SIGKILLed keeper is
replaced with the pipes fsup holds, and the child notices nothing.
"""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from helpers import Server, keeper_processes, main_processes, nasty_bundle, wait_for

from supervisor.core import cri

pytestmark = pytest.mark.e2e


def lines_of(server: Server, formation_id: str, query: str = "lines=10000") -> list[dict[str, Any]]:
    return server.rpc.call("GET", f"/rpc/formations/{formation_id}/logs?{query}")["lines"]  # type: ignore[no-any-return]


def direct(port: int, path: str, **params: Any) -> dict[str, Any]:
    """A request straight to the formation's own port (fsup may be down or stopped)."""
    answer = httpx.get(f"http://127.0.0.1:{port}{path}", params=params, trust_env=False, timeout=30)
    answer.raise_for_status()
    return answer.json()  # type: ignore[no-any-return]


def when(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def cri_lines(log_dir: Path) -> list[cri.CriLine]:
    """Every CRI line on disk, oldest file first (backups, then the current file)."""
    found = []
    for path in sorted(log_dir.glob("*.log*"), key=lambda p: (-_backup(p), p.name)):
        for raw in path.read_bytes().split(b"\n"):
            parsed = cri.parse(raw)
            if parsed is not None:
                found.append(parsed)
    return found


def _backup(path: Path) -> int:
    suffix = path.name.rpartition(".log")[2]
    return int(suffix[1:]) if suffix.startswith(".") and suffix[1:].isdigit() else 0


def test_lines_alternated_between_streams_come_back_in_sequence_with_times(
    server: Server,
) -> None:
    server.rpc.deploy(nasty_bundle("talker"))
    before = time.time()
    server.rpc.call("GET", "/rpc/formations/talker")  # settled
    httpx.get(f"{server.url}/api/talker/alternate", params={"n": 40, "gap_ms": 2}, trust_env=False)
    after = time.time()
    got = wait_for(
        lambda: (
            [x for x in lines_of(server, "talker") if x["line"].startswith("seq-")]
            if any(x["line"] == "seq-39" for x in lines_of(server, "talker"))
            else None
        )
    )
    assert [x["line"] for x in got] == [f"seq-{i}" for i in range(40)]
    assert [x["stream"] for x in got] == ["stdout", "stderr"] * 20
    assert {x["version"] for x in got} == {"1.0.0"}
    times = [when(x["ts"]) for x in got]
    assert times == sorted(times)
    assert before - 0.01 <= times[0] and times[-1] <= after + 0.01
    # `lines=N` is N lines in all (not N per stream): the newest, both streams merged.
    last = [x["line"] for x in lines_of(server, "talker", "lines=3")]
    everything = [x["line"] for x in lines_of(server, "talker")]
    assert len(last) == 3
    assert any(everything[i : i + 3] == last for i in range(len(everything) - 2))


def test_lines_written_while_fsup_is_killed_come_back_with_their_times(home: Path) -> None:
    server = Server(home).start()
    try:
        port = server.rpc.deploy(nasty_bundle("talker"))["port"]
        keepers = keeper_processes(home)
        assert len(keepers) == 1
        child = main_processes(home, "talker")[0].pid
        server.kill()
        before = time.time()
        direct(port, "/say", stream="stderr", text="while-down-1,while-down-2")
        after = time.time()
        server = Server(home).start()
        assert main_processes(home, "talker")[0].pid == child  # adopted, not restarted
        assert [p.pid for p in keeper_processes(home)] == [keepers[0].pid]  # the same keeper
        got = wait_for(
            lambda: [x for x in lines_of(server, "talker") if x["line"].startswith("while-down")]
        )
        assert [x["line"] for x in got] == ["while-down-1", "while-down-2"]
        assert all(before - 0.01 <= when(x["ts"]) <= after + 0.01 for x in got)
        assert {x["stream"] for x in got} == {"stderr"}
    finally:
        server.stop()


def test_a_child_logging_fast_while_fsup_is_stopped_does_not_block(server: Server) -> None:
    port = server.rpc.deploy(nasty_bundle("flooder"))["port"]
    log_dir = server.home / "server" / "logs" / "formations" / "flooder"
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        direct(port, "/flood", tag="f", seconds=1)

        def done() -> re.Match[bytes] | None:
            for line in reversed(cri_lines(log_dir)):
                found = re.match(rb"f-done count=(\d+) max_write_ms=([\d.]+)", line.text)
                if found:
                    return found
            return None

        # Read from disk: the keeper writes while fsup is stopped.
        report = wait_for(done, timeout=30)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    count, longest_ms = int(report[1]), float(report[2])
    assert count * 96 > 4 * 1024 * 1024, f"only {count} lines: the writer was held up"
    assert longest_ms < 500, f"a write blocked for {longest_ms} ms while fsup was stopped"
    # fsup, back, reads the last of them (health checks' lines may follow).
    lines = lines_of(server, "flooder", "lines=100&stream=stdout")
    assert any(x["line"].startswith(f"f-{count - 1} ") for x in lines)


def test_lines_written_across_rotations_are_all_there(home: Path) -> None:
    (home / "server").mkdir(parents=True)
    (home / "server" / "config.yaml").write_text(
        "limits: {log_max_bytes: 20000, log_backups: 40}\n"
    )
    server = Server(home).start()
    try:
        port = server.rpc.deploy(nasty_bundle("rotor"))["port"]
        direct(port, "/flood", tag="r", count=3000)
        wait_for(
            lambda: any(
                x["line"].startswith("r-done") for x in lines_of(server, "rotor", "stream=stderr")
            )
        )
        log_dir = home / "server" / "logs" / "formations" / "rotor"
        assert len(list(log_dir.glob("1.0.0.log.*"))) >= 3  # it did rotate, several times
        numbers = [
            int(x["line"].split()[0][2:])
            for x in lines_of(server, "rotor", "lines=10000&stream=stdout")
            if x["line"].startswith("r-")
        ]
        assert numbers == list(range(3000))
    finally:
        server.stop()


def test_a_killed_keeper_is_replaced_with_the_pipes_fsup_holds(server: Server) -> None:
    port = server.rpc.deploy(nasty_bundle("talker"))["port"]
    child = main_processes(server.home, "talker")[0]
    (keeper,) = keeper_processes(server.home)
    keeper.kill()
    keeper.wait(10)
    # The child writes into the pipe at once: fsup's read ends keep it open (no EPIPE).
    direct(port, "/say", stream="stderr", text="after-the-keeper-died")
    got = wait_for(
        lambda: [x for x in lines_of(server, "talker") if x["line"] == "after-the-keeper-died"]
    )
    assert got[0]["ts"] is not None
    new = keeper_processes(server.home)
    assert len(new) == 1 and new[0].pid != keeper.pid
    assert child.is_running() and psutil.Process(child.pid).create_time() == child.create_time()
    assert "went away" in server.log_tail()
    # The status says the output is stamped, by the second keeper this fsup started.
    state = server.rpc.call("GET", "/rpc/server/status")["log_keeper"]
    assert state == {"connected": True, "pipes": 2, "keepers_started": 2, "error": None}

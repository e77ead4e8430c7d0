"""`fsup events ID [-n N] [-f]`: its arguments, its one line per event, and the command on a
real server (the timeline after a kill -9, then followed live until Ctrl-C)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import IO, Any

import pytest
from helpers import REPO, Server, nasty_bundle, wait_for

from supervisor.cli.parser import build_parser
from supervisor.cli.render import timeline_line


def envelope(type_: str, **data: Any) -> dict[str, Any]:
    return {"type": type_, "ts": "2026-12-06T11:00:00Z", "search_id": None, "data": data}


def test_the_parser_takes_an_id_a_count_and_follow() -> None:
    args = build_parser().parse_args(["events", "web", "-n", "5", "-f"])
    assert (args.command, args.id, args.lines, args.follow) == ("events", "web", 5, True)
    defaults = build_parser().parse_args(["events", "web"])
    assert (defaults.lines, defaults.follow) == (100, False)
    with pytest.raises(SystemExit) as usage:
        build_parser().parse_args(["events", "../x"])
    assert usage.value.code == 2


def test_each_event_is_one_line_that_says_what_happened() -> None:
    sigkill = envelope(
        "formation_state_changed",
        formation_id="web",
        **{"from": "running", "to": "restarting", "reason": "exited"},
        exit={"description": "killed by SIGKILL", "uptime_s": 12.5},
    )
    line = timeline_line(sigkill)
    assert line.startswith("2026-12-06T11:00:00Z  formation_state_changed")
    assert line.endswith("running -> restarting (exited): killed by SIGKILL after 12.5s")
    gave_up = envelope(
        "formation_state_changed",
        **{"from": "restarting", "to": "crashed", "reason": "gave_up"},
        error="restarted 3 times within 60s (max_restarts 3); giving up",
        exit={"description": "exited with code 3", "uptime_s": 0.2},
        gave_up={"restarts": 3, "window_s": 60, "max_restarts": 3},
    )
    assert timeline_line(gave_up).endswith("; gave up after 3 restarts within 60s")
    aborted = envelope(
        "formation_update_aborted",
        kind="update",
        version="1.1.0",
        stage="health_check",
        error="not healthy after 1s (last error: refused)",
    )
    assert timeline_line(aborted).endswith(
        "update to 1.1.0 aborted at health_check: not healthy after 1s (last error: refused)"
    )
    assert timeline_line(envelope("formation_health_changed", healthy=False, error="503")).endswith(
        "unhealthy: 503"
    )
    assert "\n" not in timeline_line(envelope("formation_new_kind", formation_id="web", x=1))


def fsup(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUXI_HOME": str(server.home), "MUXI_URL": server.url}
    argv = [sys.executable, "-m", "supervisor", *args]
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.e2e
def test_events_prints_the_timeline_then_follows_until_ctrl_c(server: Server) -> None:
    first = server.rpc.deploy(nasty_bundle("phoenix"))
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: server.formation("phoenix")["pid"] not in (None, first["pid"]))
    wait_for(lambda: server.formation("phoenix")["status"] == "running")

    printed = fsup(server, "events", "phoenix")
    assert printed.returncode == 0, printed.stderr
    assert "running -> restarting (exited): killed by SIGKILL" in printed.stdout
    assert len(fsup(server, "events", "phoenix", "-n", "2").stdout.splitlines()) == 2
    as_json = json.loads(fsup(server, "--json", "events", "phoenix", "-n", "1").stdout)
    assert as_json["formation_id"] == "phoenix" and len(as_json["events"]) == 1
    missing = fsup(server, "events", "nobody")
    assert missing.returncode == 1 and "FORMATION_NOT_FOUND" in missing.stderr

    env = {**os.environ, "MUXI_HOME": str(server.home), "MUXI_URL": server.url}
    with subprocess.Popen(
        [sys.executable, "-m", "supervisor", "events", "phoenix", "-f", "-n", "1"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as follower:
        assert follower.stdout is not None and follower.stderr is not None
        lines = queue.Queue[str]()
        reader = threading.Thread(target=read_into, args=(follower.stdout, lines), daemon=True)
        reader.start()
        try:
            assert "formation_state_changed" in next_line(lines)  # the timeline's last
            server.rpc.call("POST", "/rpc/formations/phoenix/stop")
            assert "running -> stopping (stop)" in next_line(lines)  # live
            assert "stopping -> stopped (stop)" in next_line(lines)
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=20) == 0  # stdout is the reader thread's alone
            assert "Traceback" not in follower.stderr.read()
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
            reader.join(timeout=20)  # at the end of its stdout, before the pipes are closed


def read_into(stream: IO[str], lines: queue.Queue[str]) -> None:
    """A thread's: the stream's lines as they come (a `select` on the pipe misses lines that
    a `readline` already pulled into the file object's buffer)."""
    for line in stream:
        lines.put(line)


def next_line(lines: queue.Queue[str]) -> str:
    try:
        return lines.get(timeout=20)
    except queue.Empty:
        raise AssertionError("no line within 20 s") from None

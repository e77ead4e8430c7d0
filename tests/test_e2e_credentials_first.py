"""End-to-end: the credentials exist before fsup's port answers anything (issue 17).

A script that waits for `/health` and then reads `credentials.json` (the CLI, every test
harness) must find it: `/health` is answered early, by a thread, before the server loads, so
the files are written before the port listens. Polled from the launch in a tight loop: at the
first accepted connection and at the first 200, both files are whole and private.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fsup_processes import no_fsup_left  # noqa: F401 - an autouse fixture
from helpers import REPO
from port_blocks import PORT_HIGH, PORT_LOW

pytestmark = pytest.mark.e2e

ROUNDS = 4
# fsup's own port: the last of this test process's claimed block (no other test run uses it,
# and it is below the ephemeral range), with formations kept off it.
PORT = PORT_HIGH
FORMATION_PORTS = f"{PORT_LOW}-{PORT_HIGH - 1}"


def check_credentials(server: Path) -> None:
    """Both files whole, in their contract shape, mode 0600."""
    creds = server / "credentials.json"
    token = server / "api.token"
    data = json.loads(creds.read_text())
    assert set(data) == {"key_id", "secret_key", "server_id", "created_at"}
    assert re.fullmatch(r"[0-9a-f]{64}\n", token.read_text())
    for path in (creds, token):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def first_connection(proc: subprocess.Popen[bytes], deadline: float) -> socket.socket:
    """Connect to fsup's port as soon as it listens (no pause between tries)."""
    while time.monotonic() < deadline:
        try:
            return socket.create_connection(("127.0.0.1", PORT), timeout=10)
        except ConnectionRefusedError:
            assert proc.poll() is None, "fsup exited"
    raise AssertionError("fsup's port never listened")


def health(conn: socket.socket) -> bytes:
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := conn.recv(65536):
        answer += chunk
    return answer


def test_credentials_exist_at_the_first_health_answer(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        home = tmp_path / f"home{round_}"
        home.mkdir()
        env = {**os.environ, "MUXI_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "supervisor", "serve", "--port", str(PORT)]
        proc = subprocess.Popen(
            [*argv, "--port-range", FORMATION_PORTS],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            launched = time.monotonic()
            deadline = launched + 60
            answer = b""
            while not answer.startswith(b"HTTP/1.1 200 "):
                with first_connection(proc, deadline) as conn:
                    check_credentials(home / "server")  # the port listens: they exist
                    answer = health(conn)
            check_credentials(home / "server")
            print(f"round {round_}: first /health 200 after {time.monotonic() - launched:.3f} s")
            # Stopped once it runs (a signal while it loads ends it before its handlers are
            # in place: a different story).
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith(b"fsup listening on ")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode(errors="replace")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not json\n", "not the JSON object fsup wrote"),
        ('["a", "list"]\n', "not the JSON object fsup wrote"),
        ('{"key_id": "MUXI_LOCAL_00"}\n', "no 'secret_key'"),
    ],
)
def test_unreadable_credentials_stop_the_start_with_a_message(
    tmp_path: Path, content: str, reason: str
) -> None:
    server = tmp_path / "server"
    server.mkdir()
    creds = server / "credentials.json"
    creds.write_text(content)
    env = {**os.environ, "MUXI_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", "serve", "--port", str(PORT)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"fsup: {creds} cannot be read ({reason})"), done.stderr
    assert "Traceback" not in done.stderr
    assert creds.read_text() == content
    assert not (server / "api.token").exists()

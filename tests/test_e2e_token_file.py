"""End-to-end: a broken `api.token` is named as such, and never costs `credentials.json`.

Before, `fsup serve` on a home whose `api.token` held undecodable bytes exited 1 blaming
`credentials.json` ("restore it, or move it away"): following that advice would have thrown
away the working HMAC credentials every `/rpc` client holds. Now the token file is read on
its own: one without a token is replaced (the token is fsup's own, fetched again from the
loopback bootstrap, as after a rotation) and `fsup serve` says so naming `api.token`; one
that cannot be read at all is refused naming `api.token`. `credentials.json` is untouched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fsup_processes import no_fsup_left  # noqa: F401 - an autouse fixture
from helpers import REPO, Server

pytestmark = pytest.mark.e2e

GARBAGE = b"\xff\xfe" + b"\x00garbage" * 4


def first_run(home: Path) -> bytes:
    """Start and stop fsup once on `home`: its credentials.json, as it wrote it."""
    home.mkdir(parents=True)
    server = Server(home).start()
    assert server.stop() == 0, server.log_tail()
    return (home / "server" / "credentials.json").read_bytes()


def test_a_token_file_without_a_token_is_replaced_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "muxi"
    credentials = first_run(home)
    token_file = home / "server" / "api.token"
    token_file.write_bytes(GARBAGE)
    server = Server(home).start()
    try:
        said = server.log_tail()
        assert f"{token_file} held no token" in said and "replaced with a new API token" in said
        assert "credentials.json" not in said
        assert (home / "server" / "credentials.json").read_bytes() == credentials
        token = token_file.read_text()
        assert re.fullmatch(r"[0-9a-f]{64}\n", token)
        bootstrap = httpx.get(f"{server.url}/api/v1/auth/bootstrap", trust_env=False)
        assert bootstrap.json() == {"token": token.strip()}
        assert server.rpc.call("GET", "/rpc/formations") is not None  # the old HMAC key works
    finally:
        assert server.stop() == 0, server.log_tail()


def test_a_fresh_home_with_a_broken_token_file_starts(tmp_path: Path) -> None:
    """The reviewer's case: a fresh home, only a broken api.token in it."""
    home = tmp_path / "muxi"
    (home / "server").mkdir(parents=True)
    (home / "server" / "api.token").write_bytes(GARBAGE)
    server = Server(home).start()
    try:
        assert "api.token held no token" in server.log_tail()
        assert server.rpc.call("GET", "/rpc/formations") is not None
    finally:
        assert server.stop() == 0, server.log_tail()


def test_a_token_file_that_cannot_be_read_is_refused_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "muxi"
    credentials = first_run(home)
    token_file = home / "server" / "api.token"
    token_file.unlink()
    token_file.mkdir()
    env = {**os.environ, "MUXI_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", "serve", "--port", "0"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert f"{token_file} cannot be read or written" in done.stderr
    assert "credentials.json is not affected" in done.stderr
    assert (home / "server" / "credentials.json").read_bytes() == credentials
    assert token_file.is_dir()

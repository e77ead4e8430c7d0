"""End-to-end: a logged-out session cookie against a real fsup, across restarts. A logout is
written to `server/sessions.revoked` (0600) before it is answered, so the cookie is still
refused by the next fsup while the other session lives; a record the next fsup cannot read
ends every session opened before it (fail closed), with a 401 that says to open a new one,
and a new one works."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import httpx
import pytest
from helpers import Server

pytestmark = pytest.mark.e2e

CSRF = {"X-Fsup-Request": "1"}


def new_cookie(server: Server) -> str:
    token = httpx.get(f"{server.url}/api/v1/auth/bootstrap", trust_env=False).json()["token"]
    answer = httpx.post(
        f"{server.url}/api/v1/session",
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.cookies["rm_session"])


def call(server: Server, method: str, path: str, cookie: str) -> httpx.Response:
    return httpx.request(
        method,
        f"{server.url}/api/v1{path}",
        headers={"Cookie": f"rm_session={cookie}", **CSRF},
        trust_env=False,
        timeout=60,
    )


def refused_because(response: httpx.Response, words: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"]["code"] == "UNAUTHORIZED" and words in body["message"]
    assert "POST /api/v1/session" in body["message"]


def test_a_logged_out_cookie_stays_refused_across_restarts(tmp_path: Path) -> None:
    home = tmp_path / "muxi"
    home.mkdir()
    record = home / "server" / "sessions.revoked"
    server = Server(home).start()
    try:
        gone, kept = new_cookie(server), new_cookie(server)
        assert call(server, "POST", "/session/logout", gone).status_code == 200
        refused_because(call(server, "GET", "/session/check", gone), "logged out")
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        assert record.read_text().count("\n") == 1  # one journal line for one logout
        assert server.stop() == 0, server.log_tail()

        server.start()  # the next fsup reads the journal back
        refused_because(call(server, "GET", "/session/check", gone), "logged out")
        refused_because(call(server, "GET", "/events", gone), "logged out")
        assert call(server, "GET", "/session/check", kept).status_code == 200
        assert server.stop() == 0, server.log_tail()

        record.write_bytes(b"\x00 damaged \xff")
        server.start()  # it cannot tell which sessions were logged out: all of them end
        fresh = new_cookie(server)
        refused_because(call(server, "GET", "/session/check", kept), "has ended")
        refused_because(call(server, "GET", "/session/check", gone), "has ended")
        # Expiries are whole seconds: a session opened in the very second the record was
        # read is ended with the others; one opened a second later lives.
        deadline = time.monotonic() + 10
        while call(server, "GET", "/session/check", fresh).status_code != 200:
            assert time.monotonic() < deadline, "a session opened after the floor is refused"
            time.sleep(0.2)
            fresh = new_cookie(server)
        assert "cannot be read" in server.log_tail() and "Traceback" not in server.log_tail()
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
    finally:
        code = server.stop()
    assert code == 0

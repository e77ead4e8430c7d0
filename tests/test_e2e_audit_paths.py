"""End-to-end: every control path lands in the audit trail (issue 17, item 6).

Against a real fsup: a dashboard-style restart (the session cookie and `X-Fsup-Request`), a
bearer search created, started and deleted, a settings change, a session opened and closed, a
token rotation and an `/rpc` stop each appear in `fsup audit --json` with their method, path,
status and how the caller authenticated; refused ones (no credentials, a cross-site cookie
call, a head the guard refuses) appear with what they claimed; reads through `/api/v1` do not.
A stop whose client hangs up before the answer, through `/rpc` or `/api/v1`, still stops the
formation and is in the trail exactly once, with status 499.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from helpers import REPO, Server, api_client, formation_processes, nasty_bundle, wait_for

from supervisor.storage.store import AUDIT_BATCH, AUDIT_KEEP
from supervisor.storage.store.audit import REFUSED_KEEP, TRIM_EVERY

pytestmark = pytest.mark.e2e

CSRF = {"X-Fsup-Request": "1"}


def fsup(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUXI_HOME": str(server.home), "MUXI_URL": server.url}
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def entries_after(server: Server, count: int) -> list[tuple[object, ...]]:
    """The trail as `fsup audit --json` shows it, past the first `count` entries."""
    done = fsup(server, "--json", "audit", "-n", "100")
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)["entries"]
    assert all(e["duration_ms"] >= 0 and e["remote_addr"] == "127.0.0.1" for e in entries)
    return [(e["method"], e["path"], e["status"], e["auth"], e["key_id"]) for e in entries][count:]


def with_cookie(cookie: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"rm_session={cookie}", **headers}


def test_every_control_path_is_audited(server: Server) -> None:
    key = server.rpc.key_id
    server.rpc.deploy(nasty_bundle("alpha"))
    with api_client(server) as bearer:
        created = bearer.post("/searches", json={"keyword": "payment failed"})
        assert created.status_code == 201, created.text
        search = created.json()["search"]["id"]
        assert bearer.post(f"/searches/{search}/start").status_code == 200
        assert bearer.get(f"/searches/{search}").status_code == 200  # a read: not audited
        assert bearer.delete(f"/searches/{search}").status_code == 200
        assert bearer.patch("/settings", json={"log_level": "info"}).status_code == 200
        assert bearer.get("/settings").status_code == 200
        assert bearer.get("/formations").status_code == 200
        opened = bearer.post("/session")
        assert opened.status_code == 200
        cookie = str(opened.cookies["rm_session"])
        duplicated = bearer.post("/searches?q=1&q=2", json={"keyword": "x"})
        assert duplicated.status_code == 400  # refused by the head's checks, before auth

    ui = httpx.Client(base_url=f"{server.url}/api/v1", trust_env=False, timeout=60)
    with ui:
        restart = ui.post("/formations/alpha/restart", headers=with_cookie(cookie, **CSRF))
        assert restart.status_code == 200, restart.text
        cross_site = ui.post("/formations/alpha/stop", headers=with_cookie(cookie))
        assert cross_site.status_code == 403
        assert ui.post("/formations/alpha/stop").status_code == 401  # no credentials
        assert ui.get("/formations", headers=with_cookie(cookie)).status_code == 200
        logout = ui.post("/session/logout", headers=with_cookie(cookie, **CSRF))
        assert logout.status_code == 200

    server.rpc.call("POST", "/rpc/formations/alpha/stop")
    with api_client(server) as bearer:
        assert bearer.post("/token/rotate").status_code == 200

    trail = entries_after(server, 0)
    assert trail == [
        ("POST", "/rpc/formations/deploy", 201, "hmac", key),
        ("POST", "/api/v1/searches", 201, "bearer", ""),
        ("POST", f"/api/v1/searches/{search}/start", 200, "bearer", ""),
        ("DELETE", f"/api/v1/searches/{search}", 200, "bearer", ""),
        ("PATCH", "/api/v1/settings", 200, "bearer", ""),
        ("POST", "/api/v1/session", 200, "bearer", ""),
        ("POST", "/api/v1/searches?q=1&q=2", 400, "bearer", ""),
        ("POST", "/api/v1/formations/alpha/restart", 200, "session", ""),
        ("POST", "/api/v1/formations/alpha/stop", 403, "session", ""),
        ("POST", "/api/v1/formations/alpha/stop", 401, "", ""),
        ("POST", "/api/v1/session/logout", 200, "session", ""),
        ("POST", "/rpc/formations/alpha/stop", 200, "hmac", key),
        ("POST", "/api/v1/token/rotate", 200, "bearer", ""),
    ]


def test_fsup_audit_shows_how_each_caller_signed_in(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("beta"))
    cookie_response = None
    with api_client(server) as bearer:
        cookie_response = bearer.post("/session")
    cookie = str(cookie_response.cookies["rm_session"])
    restart = httpx.post(
        f"{server.url}/api/v1/formations/beta/restart",
        headers=with_cookie(cookie, **CSRF),
        trust_env=False,
        timeout=60,
    )
    assert restart.status_code == 200, restart.text
    done = fsup(server, "audit", "-n", "3")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:3] == ["TIME", "AUTH", "KEY"]
    assert [row.split()[1:5] for row in rows] == [
        ["hmac", server.rpc.key_id, "POST", "/rpc/formations/deploy"],
        ["bearer", "-", "POST", "/api/v1/session"],
        ["session", "-", "POST", "/api/v1/formations/beta/restart"],
    ]


def test_a_flood_of_refused_calls_does_not_push_accepted_ones_out(server: Server) -> None:
    """Unauthenticated POSTs past the refused rows' budget: the trail keeps the accepted call
    made before them and the newest refusals, and the table stays within its budgets."""
    server.rpc.deploy(nasty_bundle("gamma"))
    flood = REFUSED_KEEP + 1_000
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as anyone:
        for i in range(flood):
            assert anyone.post(f"/api/v1/formations/gamma/stop?i={i}").status_code == 401
    entries = server.rpc.call("GET", f"/rpc/server/logs?lines={AUDIT_KEEP}")["entries"]
    assert entries[0]["path"] == "/rpc/formations/deploy"
    refused = [e for e in entries if e["status"] == 401]
    assert refused[-1]["path"] == f"/api/v1/formations/gamma/stop?i={flood - 1}"
    assert REFUSED_KEEP <= len(refused) <= REFUSED_KEEP + TRIM_EVERY + AUDIT_BATCH
    assert server.formation("gamma")["status"] == "running"


# --- a call whose client goes away before the answer ----------------------------------------

STUBBORN_STOP_S = 3  # the stop waits this long for a process that ignores SIGTERM
HANG_UP_S = 0.3


def send_and_hang_up(server: Server, method: str, path: str, headers: dict[str, str]) -> bytes:
    """Send a request on a raw socket and close it after `HANG_UP_S`, whatever came back."""
    port = int(server.url.rsplit(":", 1)[1])
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"{head}Content-Length: 0\r\n\r\n".encode("latin-1"))
        sock.settimeout(HANG_UP_S)
        try:
            return sock.recv(65536)
        except TimeoutError:
            return b""


def entries_for(server: Server, path: str) -> list[dict[str, object]]:
    entries = server.rpc.call("GET", f"/rpc/server/logs?lines={AUDIT_KEEP}")["entries"]
    return [e for e in entries if e["path"] == path]


@pytest.mark.parametrize("door", ["rpc", "api_v1"])
def test_a_change_whose_client_hangs_up_is_audited_once_with_499(server: Server, door: str) -> None:
    """The client closes its connection 0.3 s into a stop that takes 3 s: the formation is
    stopped all the same, and the call is in the trail exactly once, as 499 (nginx's 'client
    closed request'). Before, the entry was written only with an answer: none at all."""
    fid = f"hangup-{door.replace('_', '')}"
    server.rpc.deploy(nasty_bundle(fid, mode="stubborn", stop={"timeout": STUBBORN_STOP_S}))
    if door == "rpc":
        path, auth = f"/rpc/formations/{fid}/stop", "hmac"
        signed = server.rpc.build("POST", path)
        headers = {k: v for k, v in signed.headers.items() if k.lower() != "content-length"}
        key = server.rpc.key_id
    else:
        path, auth, key = f"/api/v1/formations/{fid}/stop", "bearer", ""
        token = (server.home / "server" / "api.token").read_text().strip()
        headers = {"Host": "127.0.0.1", "Authorization": f"Bearer {token}"}
    started = time.monotonic()
    assert send_and_hang_up(server, "POST", path, headers) == b""  # no answer in 0.3 s
    wait_for(lambda: server.formation(fid)["status"] == "stopped", timeout=60)
    assert time.monotonic() - started >= STUBBORN_STOP_S - 0.5  # it did wait for the process
    wait_for(lambda: entries_for(server, path), timeout=20)
    # A second entry (after-request and teardown both writing) would be written as the call
    # ends; the trail keeps the order of writing, so once a call made after that is in it, so
    # is any second entry.
    barrier = f"/rpc/formations/{fid}/logs?lines=1"
    server.rpc.call("GET", barrier)
    wait_for(lambda: entries_for(server, barrier), timeout=20)
    entries = entries_for(server, path)
    assert [(e["method"], e["status"], e["auth"], e["key_id"]) for e in entries] == [
        ("POST", 499, auth, key)
    ], entries
    assert float(entries[0]["duration_ms"]) > 0  # type: ignore[arg-type]
    assert not formation_processes(server.home, fid)

"""End-to-end: the proxy in front of backends that break HTTP on purpose (issue 17, item 7).

The backend (tests/fixtures/misbehaving.py) is written on raw sockets: it writes two answers
at once, dies inside a chunk, closes before its Content-Length, sends both framings. Through a
real fsup: the next client always gets its own answer, a cut body reaches the client as an
error (never as a shorter whole answer), contradictory framing is a 502, and fsup's log holds
one line per cut and no traceback.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import Server, make_bundle, serving, wait_for

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "misbehaving.py"


def misbehaving_bundle(formation_id: str, mode: str = "raw", **extra: Any) -> bytes:
    manifest: dict[str, Any] = {
        "id": formation_id,
        "version": "1.0.0",
        "command": ["python3", "misbehaving.py", mode],
        "health": {"http": "/health", "interval": 0.1, "timeout": 10},
        "stop": {"timeout": 10},
    }
    manifest.update(extra)
    return make_bundle(
        {"formation.yaml": json.dumps(manifest), "misbehaving.py": FIXTURE.read_text()}
    )


@pytest.fixture(scope="module")
def fsup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One fsup for the module, with the misbehaving formation `mis` deployed."""
    home = tmp_path_factory.mktemp("backends") / "muxi"
    home.mkdir()
    with serving(home, misbehaving_bundle("mis")) as server:
        yield server


def tracebacks(server: Server) -> list[str]:
    """Tracebacks in fsup's log and its stderr."""
    found = []
    for path in (server.home / "server" / "logs" / "fsup.log", server.home / "fsup-test.log"):
        if path.exists():
            text = path.read_text(errors="replace")
            found += [text[max(0, i - 300) : i + 600] for i in _indexes(text, "Traceback")]
    return found


def _indexes(text: str, word: str) -> list[int]:
    found, at = [], text.find(word)
    while at != -1:
        found.append(at)
        at = text.find(word, at + 1)
    return found


def stats(server: Server) -> dict[str, Any]:
    return httpx.get(f"{server.url}/api/mis/stats", trust_env=False).json()


def answered(port: int, path: str) -> int:
    """How many answers to `path` the backend has written whole (its leftovers included),
    asked of it directly, not through fsup's pooled connections."""
    stats = httpx.get(f"http://127.0.0.1:{port}/stats", trust_env=False, timeout=10).json()
    return int(stats["answered"].get(path, 0))


@pytest.mark.parametrize("path", ["/double", "/double-late"])
def test_the_next_client_gets_its_own_answer(fsup: Server, path: str) -> None:
    """A leftover answer in the pooled connection is never handed to the next request: not
    when it came in the same write as the first (h11 holds it), nor when it came later,
    while the connection was idle (the socket is readable). (One that comes after the next
    request was sent cannot be told from its answer, in HTTP/1.1: so the next request waits
    until the backend has written the leftover.)"""
    port = fsup.formation("mis")["port"]
    with httpx.Client(base_url=fsup.url, trust_env=False, timeout=10) as http:
        for i in range(5):
            first = http.get(f"/api/mis{path}")
            assert (first.status_code, first.text) == (200, path.strip("/"))
            wait_for(lambda i=i: answered(port, path) > i)
            mine = http.get(f"/api/mis/mine?i={i}")
            assert (mine.status_code, mine.text) == (200, f"/mine?i={i}")
    assert tracebacks(fsup) == []


def test_a_body_cut_inside_a_chunk_reaches_the_client_as_an_error(fsup: Server) -> None:
    with httpx.Client(base_url=fsup.url, trust_env=False, timeout=10) as http:
        for _ in range(3):
            with pytest.raises(httpx.RemoteProtocolError):
                http.get("/api/mis/cut-chunk")
            assert http.get("/api/mis/after").text == "/after"  # fsup serves on
    assert tracebacks(fsup) == []
    assert _log(fsup).count("/cut-chunk") == 0  # the log names the formation, not the client
    assert _log(fsup).count("the answer was cut short") >= 3


def test_a_body_short_of_its_content_length_reaches_the_client_as_an_error(
    fsup: Server,
) -> None:
    with httpx.Client(base_url=fsup.url, trust_env=False, timeout=10) as http:
        for _ in range(3):
            with pytest.raises(httpx.RemoteProtocolError):
                http.get("/api/mis/short-big")
            # A small answer is read whole before anything is sent: a 502, never a short 200.
            small = http.get("/api/mis/short-small")
            assert small.status_code == 502, small.text
            assert small.json()["error"]["code"] == "BAD_GATEWAY"
            # A POST streams its answer (it is not retried): cut short as well.
            with pytest.raises(httpx.RemoteProtocolError):
                http.post("/api/mis/short-big", content=b"x" * 10)
            assert http.get("/api/mis/after").text == "/after"
    assert tracebacks(fsup) == []


def test_contradictory_framing_is_a_502_and_not_retried(fsup: Server) -> None:
    before = stats(fsup)["paths"].get("/both", 0)
    with httpx.Client(base_url=fsup.url, trust_env=False, timeout=10) as http:
        answer = http.get("/api/mis/both")
        assert answer.status_code == 502, answer.text
        body = answer.json()
        assert body["error"]["code"] == "BAD_GATEWAY"
        assert "Content-Length and Transfer-Encoding" in body["error"]["message"]
        assert http.get("/api/mis/after").text == "/after"
    assert stats(fsup)["paths"]["/both"] == before + 1
    assert tracebacks(fsup) == []


def test_only_the_clients_headers_are_forwarded(fsup: Server) -> None:
    with httpx.Client(base_url=fsup.url, trust_env=False, timeout=10) as http:
        plain = http.get("/api/mis/headers", headers={"X-Mine": "1"}).json()
        spoofed = http.get("/api/mis/headers", headers={"Remote-Addr": "203.0.113.9"}).json()
    names = [name.lower() for name, _ in plain]
    assert "remote-addr" not in names
    assert names.count("x-forwarded-for") == 1 and names.count("x-formation-id") == 1
    assert dict((n.lower(), v) for n, v in plain)["x-mine"] == "1"
    assert [v for n, v in spoofed if n.lower() == "remote-addr"] == ["203.0.113.9"]


def test_a_websocket_upgrade_is_refused_with_a_400(fsup: Server) -> None:
    host, port = fsup.url.removeprefix("http://").rsplit(":", 1)
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (
        f"GET /api/mis/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(handshake.encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), data
    assert json.loads(body[body.index(b"{") :])["error"]["code"] == "INVALID_REQUEST"
    assert stats(fsup)["paths"].get("/ws") is None
    assert tracebacks(fsup) == []


def _log(server: Server) -> str:
    return (server.home / "server" / "logs" / "fsup.log").read_text(errors="replace")

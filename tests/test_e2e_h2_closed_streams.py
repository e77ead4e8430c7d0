"""End-to-end: HTTP/2 frames for streams fsup has already answered, or never opened, cannot
drop a connection or write a traceback (issue 17: nothing a client sends may crash fsup or
write a traceback to the log).

Hypercorn 0.18.0's HTTP/2 protocol raised out of the connection on a body that arrives after
the answer (`KeyError`), a PRIORITY flood (`TooManyStreamsError`), a plain CONNECT
(`UnboundLocalError`) and a non-ASCII request line (`UnicodeDecodeError`); fsup carries the
guard in supervisor/http/h2_guard.py (docs/upstream/hypercorn-h2-closed-stream.md). Before
it, an unauthenticated h2c `POST /api/v1/session` with a body and a GET on the same
connection dropped 11 of 50 connections. Each sequence runs many times on new connections
against one real fsup: every connection gets its answers, and neither fsup's log nor its
stderr holds a traceback or a failed connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import Server
from hostile.hostile_h2 import SEQUENCES, H2Client, check, play

pytestmark = pytest.mark.e2e

TRACEBACK = "Traceback (most recent call last)"
FAILURE_LINES = ("a connection failed", "connection failures were not logged")
REPEAT = 20  # per sequence: the racing ones failed in about one run of five before the guard
CLIENT_RUNS = 50


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("h2-closed") / "muxi"
    home.mkdir(parents=True)
    server = Server(home).start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_tail()


def addr_of(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def log_text(server: Server) -> str:
    """fsup's stderr (the test log) and its own log file."""
    paths = [server.home / "fsup-test.log", server.home / "server" / "logs" / "fsup.log"]
    return "".join(p.read_text(errors="replace") for p in paths if Path(p).exists())


def failures_logged(server: Server) -> int:
    """Tracebacks and failed-connection lines (logged with or without their traceback)."""
    text = log_text(server)
    return text.count(TRACEBACK) + sum(text.count(line) for line in FAILURE_LINES)


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_each_sequence_gets_its_answers_and_writes_no_traceback(live: Server, name: str) -> None:
    case = SEQUENCES[name]
    before = failures_logged(live)
    for _ in range(REPEAT):
        check(play(addr_of(live), case), case)
    assert httpx.get(f"{live.url}/health", trust_env=False).status_code == 200
    assert failures_logged(live) == before, live.log_tail()


def test_an_http2_client_posting_a_body_then_getting_is_always_answered(live: Server) -> None:
    """The report's own sequence through a real HTTP/2 client (httpx, prior knowledge): the
    body goes out after the head, often after fsup's 401."""
    before = failures_logged(live)
    statuses = []
    for _ in range(CLIENT_RUNS):
        with httpx.Client(http1=False, http2=True, trust_env=False, timeout=20) as client:
            posted = client.post(f"{live.url}/api/v1/session", content=b"{}")
            got = client.get(f"{live.url}/health")
            assert (posted.http_version, got.http_version) == ("HTTP/2", "HTTP/2")
            statuses.append((posted.status_code, got.status_code))
    assert statuses == [(401, 200)] * CLIENT_RUNS
    assert failures_logged(live) == before, live.log_tail()


def test_a_connection_upgraded_from_http1_is_guarded_too(live: Server) -> None:
    """`Upgrade: h2c` is Hypercorn's other way into HTTP/2: the same body after the answer."""
    before = failures_logged(live)
    for _ in range(REPEAT):
        client = H2Client(addr_of(live), upgrade=True)
        try:
            assert client.wait(1).status == 200  # the upgraded GET
            client.request(3, b"POST", b"/api/v1/session", end=False)
            assert client.wait(3).status == 401
            client.conn.send_data(3, b"{}", end_stream=True)
            client.request(5, b"GET", b"/health")
            health = client.wait(5)
            assert (health.status, health.ended) == (200, True), client.result.describe()
        finally:
            client.close()
    assert failures_logged(live) == before, live.log_tail()

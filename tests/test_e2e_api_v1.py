"""End-to-end: /api/v1 auth, the event stream (envelope, ids, resume) and the server's logs."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from helpers import Server, nasty_bundle
from helpers import api_client as api

from supervisor.cli.client import SseEvent, parse_sse

pytestmark = pytest.mark.e2e


def test_auth_rules(server: Server, home: Path) -> None:
    assert httpx.get(f"{server.url}/api/v1/health").json() == {"ok": True}
    token = httpx.get(f"{server.url}/api/v1/auth/bootstrap").json()["token"]
    assert token == (home / "server" / "api.token").read_text().strip()
    assert oct((home / "server" / "api.token").stat().st_mode & 0o777) == "0o600"
    # A forwarded header does not make a request remote, nor a remote one local.
    forwarded = httpx.get(
        f"{server.url}/api/v1/auth/bootstrap", headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert forwarded.status_code == 200
    no_bearer = httpx.get(f"{server.url}/api/v1/logs")
    assert no_bearer.status_code == 401 and no_bearer.json()["error"]["code"] == "UNAUTHORIZED"
    wrong = httpx.get(f"{server.url}/api/v1/logs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    with api(server) as client:
        assert client.get("/logs").status_code == 200
        # The event stream takes the cookie only, not the bearer token.
        assert client.get("/events").status_code == 401
        missing = client.get("/no-such-thing")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
        session = client.post("/session")
        cookie = session.headers["set-cookie"]
        assert "rm_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Max-Age=" in cookie and "Path=/api/v1" in cookie


def read_events(
    server: Server,
    cookie: str,
    count: int,
    last_id: str | None = None,
    opened: threading.Event | None = None,
    types: set[str] | None = None,
) -> list[SseEvent]:
    """The first `count` events (of `types`, when given: the fleet's own events share the
    stream with the log's)."""
    headers = {"Cookie": f"rm_session={cookie}"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    got: list[SseEvent] = []
    with httpx.stream(
        "GET", f"{server.url}/api/v1/events", headers=headers, timeout=30, trust_env=False
    ) as response:
        assert response.status_code == 200
        if opened is not None:
            opened.set()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in parse_sse(response.iter_lines()):
            if types is not None and event.data["type"] not in types:
                continue
            got.append(event)
            if len(got) >= count:
                break
    return got


def test_events_carry_the_envelope_and_resume_after_last_event_id(server: Server) -> None:
    with api(server) as client:
        cookie = client.post("/session").cookies["rm_session"]
    first: list[SseEvent] = []
    opened = threading.Event()
    reader = threading.Thread(
        target=lambda: first.extend(read_events(server, cookie, 5, opened=opened, types={"log"}))
    )
    reader.start()
    assert opened.wait(10)
    server.rpc.deploy(nasty_bundle("noisy"))  # lifecycles are logged: `log` events
    server.rpc.deploy(nasty_bundle("noisier"))
    reader.join(30)
    assert len(first) == 5
    ids = [int(e.id) for e in first]
    assert ids == sorted(ids) and len(set(ids)) == 5
    for event in first:
        assert set(event.data) == {"type", "ts", "search_id", "data"}
        assert event.event == event.data["type"] == "log"
    resumed = read_events(server, cookie, 2, last_id=str(ids[2]), types={"log"})
    assert [int(e.id) for e in resumed] == ids[3:5]


def test_server_logs_are_paged_by_cursor(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("paged"))
    with api(server) as client:
        first = client.get("/logs", params={"limit": 3}).json()
        assert len(first["items"]) == 3
        second = client.get("/logs", params={"limit": 3, "cursor": first["next_cursor"]}).json()
        assert second["items"][0]["id"] == first["items"][-1]["id"] + 1
        errors = client.get("/logs", params={"level": "error"}).json()
        assert all(item["level"] in ("error", "critical") for item in errors["items"])
        assert {"id", "ts", "level", "logger", "message"} <= set(first["items"][0])
        bad = client.get("/logs", params={"level": "loud"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_REQUEST"

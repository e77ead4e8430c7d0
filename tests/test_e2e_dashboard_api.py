"""End-to-end: the endpoints the dashboard added (DESIGN section 10) against a real fsup:
auth on each (401 in the contract's shape), the cookie with its cross-site check, logout and
token rotation ending sessions on the server, settings validation, the status event.

One server for the module (a formation to act on); token rotation runs last, since it ends
every session and the token the other tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import Server, nasty_bundle, serving

from supervisor.cli.client import parse_sse

pytestmark = pytest.mark.e2e

CSRF = {"X-Fsup-Request": "1"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("dashboard-api") / "muxi"
    home.mkdir()
    with serving(home, nasty_bundle("alpha")) as server:
        yield server


def bearer(server: Server) -> dict[str, str]:
    token = httpx.get(f"{server.url}/api/v1/auth/bootstrap", trust_env=False).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def new_cookie(server: Server) -> str:
    response = httpx.post(f"{server.url}/api/v1/session", headers=bearer(server), trust_env=False)
    assert response.status_code == 200
    return str(response.cookies["rm_session"])


def api(
    server: Server, method: str, path: str, cookie: str | None = None, **kw: object
) -> httpx.Response:
    headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
    if cookie is not None:
        headers["Cookie"] = f"rm_session={cookie}"
    return httpx.request(
        method, f"{server.url}/api/v1{path}", headers=headers, trust_env=False, timeout=60, **kw
    )  # type: ignore[arg-type]


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and body["code"] == code
    assert body["message"] == body["error"]["message"] and "details" in body["error"]


NEW_ENDPOINTS = [
    ("GET", "/formations"),
    ("GET", "/formations/alpha"),
    ("GET", "/formations/alpha/logs"),
    ("POST", "/formations/alpha/restart"),
    ("DELETE", "/formations/alpha"),
    ("GET", "/status"),
    ("GET", "/version"),
    ("GET", "/settings"),
    ("PATCH", "/settings"),
    ("GET", "/session/check"),
    ("POST", "/session/logout"),
    ("POST", "/token/rotate"),
]


def test_every_new_endpoint_needs_auth(live: Server) -> None:
    pid = live.formation("alpha")["pid"]
    for method, path in NEW_ENDPOINTS:
        refused(api(live, method, path), 401, "UNAUTHORIZED")
        wrong = {"Authorization": "Bearer " + "0" * 64}
        refused(api(live, method, path, headers=wrong), 401, "UNAUTHORIZED")
        refused(api(live, method, path, cookie="1.2.3"), 401, "UNAUTHORIZED")
    assert live.formation("alpha")["pid"] == pid, "a refused request changed nothing"


def test_each_endpoint_takes_its_own_kind_of_auth(live: Server) -> None:
    cookie = new_cookie(live)
    # The session's own endpoints take the cookie only; opening a session and rotating the
    # token take the bearer only.
    refused(api(live, "GET", "/session/check", headers=bearer(live)), 401, "UNAUTHORIZED")
    refused(api(live, "POST", "/token/rotate", cookie=cookie, headers=CSRF), 401, "UNAUTHORIZED")
    refused(api(live, "POST", "/session", cookie=cookie, headers=CSRF), 401, "UNAUTHORIZED")
    assert api(live, "GET", "/session/check", cookie=cookie).json()["ok"] is True
    # REST takes either; with both, the Authorization header alone decides.
    assert api(live, "GET", "/formations", cookie=cookie).status_code == 200
    assert api(live, "GET", "/searches", cookie=cookie).status_code == 200
    wrong = {"Authorization": "Bearer " + "0" * 64}
    refused(api(live, "GET", "/formations", cookie=cookie, headers=wrong), 401, "UNAUTHORIZED")


def test_cookie_changes_need_the_cross_site_check(live: Server) -> None:
    cookie = new_cookie(live)
    pid = live.formation("alpha")["pid"]
    host = live.url.split("://", 1)[1]
    for headers in (
        {},  # no X-Fsup-Request: a plain cross-site form or fetch
        {**CSRF, "Origin": "http://evil.example"},
        {**CSRF, "Sec-Fetch-Site": "cross-site"},
        {**CSRF, "Sec-Fetch-Site": "same-site"},
    ):
        refused(
            api(live, "POST", "/formations/alpha/restart", cookie, headers=headers),
            403,
            "FORBIDDEN",
        )
        refused(
            api(live, "POST", "/searches", cookie, headers=headers, json={"keyword": "x"}),
            403,
            "FORBIDDEN",
        )
        refused(api(live, "PATCH", "/settings", cookie, headers=headers, json={}), 403, "FORBIDDEN")
    assert live.formation("alpha")["pid"] == pid, "a refused restart restarted"
    same = {**CSRF, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    answer = api(live, "POST", "/formations/alpha/restart", cookie, headers=same)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "running" and live.formation("alpha")["pid"] != pid
    # A bearer client needs no such header: the token is no ambient credential.
    assert api(live, "PATCH", "/settings", headers=bearer(live), json={}).status_code == 200


def test_formations_list_one_logs_and_lifecycle(live: Server) -> None:
    auth = bearer(live)
    listing = api(live, "GET", "/formations", headers=auth).json()
    (alpha,) = [f for f in listing["formations"] if f["id"] == "alpha"]
    assert listing["total"] == 1 and alpha["status"] == "running"
    assert isinstance(alpha["rss_bytes"], int) and alpha["rss_bytes"] > 0
    assert "cpu_percent" in alpha and alpha["versions"] == ["1.0.0"]
    refused(api(live, "GET", "/formations/nope", headers=auth), 404, "FORMATION_NOT_FOUND")
    refused(api(live, "POST", "/formations/nope/start", headers=auth), 404, "FORMATION_NOT_FOUND")
    logs = api(live, "GET", "/formations/alpha/logs?lines=5", headers=auth).json()
    assert logs["formation_id"] == "alpha" and logs["lines"]
    refused(
        api(live, "GET", "/formations/alpha/logs?lines=-1", headers=auth), 400, "INVALID_REQUEST"
    )
    stopped = api(live, "POST", "/formations/alpha/stop", headers=auth)
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    refused(api(live, "POST", "/formations/alpha/stop", headers=auth), 409, "FORMATION_NOT_RUNNING")
    refused(
        api(live, "POST", "/formations/alpha/rollback", headers=auth), 409, "NO_PREVIOUS_VERSION"
    )
    started = api(live, "POST", "/formations/alpha/start", headers=auth)
    assert started.status_code == 200 and started.json()["status"] == "running"


def test_settings_are_validated_and_apply(live: Server) -> None:
    auth = bearer(live)
    assert api(live, "GET", "/settings", headers=auth).json() == {"log_level": "info"}
    for body, field in (
        ({"bogus": 1}, "bogus"),
        ({"log_level": "loud"}, "log_level"),
        ({"log_level": 3}, "log_level"),
        ({"log_level": None}, "log_level"),  # null is not a level (once: "no change")
    ):
        answer = api(live, "PATCH", "/settings", headers=auth, json=body)
        refused(answer, 400, "INVALID_REQUEST")
        assert answer.json()["error"]["details"]["field"] == field
    refused(api(live, "PATCH", "/settings", headers=auth, content=b"[1]"), 400, "INVALID_REQUEST")
    assert api(live, "GET", "/settings", headers=auth).json() == {"log_level": "info"}, "unchanged"
    assert api(live, "PATCH", "/settings", headers=auth, json={"log_level": "warning"}).json() == {
        "log_level": "warning"
    }
    assert (
        api(live, "PATCH", "/settings", headers=auth, json={"log_level": "info"}).status_code == 200
    )


def test_status_version_and_the_status_event(live: Server) -> None:
    auth = bearer(live)
    status = api(live, "GET", "/status", headers=auth).json()
    assert status["formations"]["total"] == 1 and status["formations"]["by_state"]["running"] == 1
    assert status["routes"]["routes"] == 1 and "requests" in status["proxy"]
    assert {"subscribers", "dropped"} <= set(status["events"])
    assert set(status["processes"]) == {"alpha"}
    version = api(live, "GET", "/version", headers=auth).json()
    assert version["api"] == "v1" and version["version"]
    cookie = new_cookie(live)
    with httpx.stream(
        "GET",
        f"{live.url}/api/v1/events",
        headers={"Cookie": f"rm_session={cookie}"},
        timeout=30,
        trust_env=False,
    ) as response:
        for event in parse_sse(response.iter_lines()):
            if event.data["type"] == "status":
                assert event.data["data"]["events"]["subscribers"] >= 1
                assert event.data["data"]["formations"]["total"] == 1
                break


def test_logout_ends_that_session_only(live: Server, tmp_path: Path) -> None:
    first, second = new_cookie(live), new_cookie(live)
    assert first != second
    out = api(live, "POST", "/session/logout", first, headers=CSRF)
    assert out.status_code == 200 and "rm_session=" in out.headers["set-cookie"]
    # The cookie replayed after the logout is refused everywhere; the other session lives.
    refused(api(live, "GET", "/session/check", first), 401, "UNAUTHORIZED")
    refused(api(live, "GET", "/formations", first), 401, "UNAUTHORIZED")
    refused(api(live, "GET", "/events", first), 401, "UNAUTHORIZED")
    assert api(live, "GET", "/session/check", second).status_code == 200
    revoked = live.home / "server" / "sessions.revoked"
    assert oct(revoked.stat().st_mode & 0o777) == "0o600"


def test_rotating_the_token_ends_every_session(live: Server) -> None:
    old = bearer(live)
    cookie = new_cookie(live)
    answer = api(live, "POST", "/token/rotate", headers=old)
    assert answer.status_code == 200
    fresh = answer.json()["token"]
    assert fresh != old["Authorization"].split()[1]
    assert (live.home / "server" / "api.token").read_text().strip() == fresh
    refused(api(live, "GET", "/formations", headers=old), 401, "UNAUTHORIZED")
    refused(api(live, "GET", "/session/check", cookie), 401, "UNAUTHORIZED")
    assert bearer(live) == {"Authorization": f"Bearer {fresh}"}
    assert api(live, "GET", "/formations", headers=bearer(live)).status_code == 200

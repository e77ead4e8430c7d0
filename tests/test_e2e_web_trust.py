"""End-to-end: what a hostile web page (DNS rebinding) or an unauthenticated client can no
longer do to a real fsup (issue 17, items 2 and 8).

- The bootstrap, a session, a bearer call, `/ui/` and the event stream each answer under
  `127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT` and a name listed in `http.allowed_hosts`,
  and are refused with 403 under any other Host; the bootstrap refuses a foreign `Origin`.
- A credential header given twice is a 401; credential answers say `Cache-Control: no-store`.
- A WebSocket upgrade to the proxy, `/rpc`, `/api/v1/events` or `/ui/` gets a clear 400 and
  writes no traceback.
- At `debug`, neither the log file nor fsup's stderr holds the token, a session cookie or an
  HMAC signature sent over HTTP/1.1 or HTTP/2.

One server for the module, with a listed name and a formation to proxy to.
"""

from __future__ import annotations

import importlib.util
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import Server, nasty_bundle, serving
from hostile.hostile_wire import Signer, exchange, request_bytes

from supervisor.core import muxi_hmac

pytestmark = pytest.mark.e2e

LISTED = "fsup.test"
FOREIGN = "evil.example"
TRACEBACK = "Traceback (most recent call last)"
BOOTSTRAP = "/api/v1/auth/bootstrap"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("web-trust") / "muxi"
    (home / "server").mkdir(parents=True)
    (home / "server" / "config.yaml").write_text(f"http: {{allowed_hosts: [{LISTED}]}}\n")
    with serving(home, nasty_bundle("alpha")) as server:
        yield server


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def host_of(server: Server, name: str) -> str:
    return f"{name}:{port_of(server)}"


def token_of(server: Server) -> str:
    return str((server.home / "server" / "api.token").read_text().strip())


def new_cookie(server: Server) -> str:
    answer = httpx.post(
        f"{server.url}/api/v1/session",
        headers={"Authorization": f"Bearer {token_of(server)}"},
        trust_env=False,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.cookies["rm_session"])


def tracebacks(server: Server) -> int:
    """Tracebacks in fsup's stderr (the test log) and in its own log file."""
    text = (server.home / "fsup-test.log").read_text(errors="replace")
    text += (server.home / "server" / "logs" / "fsup.log").read_text(errors="replace")
    return text.count(TRACEBACK)


def forbidden(answer: httpx.Response, host: str) -> None:
    assert answer.status_code == 403, answer.text
    body = answer.json()
    assert body["error"]["code"] == body["code"] == "FORBIDDEN"
    assert host in body["error"]["message"] and body["error"]["details"]["host"] == host


def call(server: Server, what: str, host: str) -> httpx.Response:
    """One of the five things a page would do, under `host`."""
    headers = {"Host": host}
    url = server.url
    with httpx.Client(trust_env=False, timeout=30) as client:
        if what == "bootstrap":
            return client.get(f"{url}/api/v1/auth/bootstrap", headers=headers)
        if what == "session":
            headers["Authorization"] = f"Bearer {token_of(server)}"
            return client.post(f"{url}/api/v1/session", headers=headers)
        if what == "bearer":
            headers["Authorization"] = f"Bearer {token_of(server)}"
            return client.get(f"{url}/api/v1/formations", headers=headers)
        if what == "ui":
            return client.get(f"{url}/ui/", headers=headers)
        headers["Cookie"] = f"rm_session={new_cookie(server)}"
        with client.stream("GET", f"{url}/api/v1/events", headers=headers) as stream:
            if stream.status_code == 200:
                first = next(stream.iter_raw())  # the stream really started
                assert first.startswith(b"retry:"), first
                return httpx.Response(200, headers=stream.headers)
            stream.read()
            return httpx.Response(
                stream.status_code, headers=stream.headers, content=stream.content
            )


WHAT = ["bootstrap", "session", "bearer", "ui", "events"]


@pytest.mark.parametrize("what", WHAT)
@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "[::1]", LISTED, "LocalHost."])
def test_each_door_opens_under_a_name_of_this_server(live: Server, what: str, name: str) -> None:
    answer = call(live, what, host_of(live, name))
    assert answer.status_code == 200, answer.text
    if what == "bootstrap":
        assert answer.json() == {"token": token_of(live)}


@pytest.mark.parametrize("what", WHAT)
@pytest.mark.parametrize("name", [FOREIGN, "fsup.test.evil.example", "127.0.0.2.nip.io", "0.0.0.0"])
def test_each_door_is_shut_under_another_name(live: Server, what: str, name: str) -> None:
    host = host_of(live, name)
    answer = call(live, what, host)
    forbidden(answer, host)
    assert token_of(live) not in answer.text


def test_the_token_does_not_work_under_a_foreign_host(live: Server) -> None:
    """The issue's report: the token, once read, worked under the attacker's Host."""
    auth = {"Authorization": f"Bearer {token_of(live)}"}
    for path in ("/api/v1/formations", "/api/v1/status", "/api/v1/settings"):
        host = host_of(live, FOREIGN)
        forbidden(httpx.get(live.url + path, headers={**auth, "Host": host}), host)
    stop = httpx.post(
        f"{live.url}/api/v1/formations/alpha/stop",
        headers={**auth, "Host": host_of(live, FOREIGN)},
        trust_env=False,
    )
    assert stop.status_code == 403
    assert live.formation("alpha")["status"] == "running"


def test_public_signed_and_proxied_routes_do_not_look_at_the_host(live: Server) -> None:
    foreign = {"Host": host_of(live, FOREIGN)}
    assert httpx.get(f"{live.url}/health", headers=foreign).json() == {"status": "healthy"}
    assert httpx.get(f"{live.url}/ping", headers=foreign).status_code == 200
    proxied = httpx.get(f"{live.url}/api/alpha/echo-headers", headers=foreign)
    assert proxied.status_code == 200, proxied.text
    signed = live.rpc.call("GET", "/rpc/formations")  # the CLI's client, under 127.0.0.1
    assert signed["total"] == 1
    creds = json.loads((live.home / "server" / "credentials.json").read_text())
    headers = Signer(creds["key_id"], creds["secret_key"]).headers("GET", "/rpc/formations")
    answer = httpx.get(f"{live.url}/rpc/formations", headers=[*headers, ("Host", FOREIGN)])
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (None, 200),
        ("http://127.0.0.1:{port}", 200),
        ("http://localhost:{port}", 200),
        (f"http://{LISTED}:{{port}}", 200),
        (f"http://{FOREIGN}:{{port}}", 403),
        ("null", 403),
        ("http://localhost:{port}.evil.example", 403),
    ],
)
def test_the_bootstrap_refuses_a_foreign_origin(
    live: Server, origin: str | None, status: int
) -> None:
    headers = {"Origin": origin.format(port=port_of(live))} if origin else {}
    answer = httpx.get(f"{live.url}/api/v1/auth/bootstrap", headers=headers, trust_env=False)
    assert answer.status_code == status, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    if status == 403:
        assert answer.json()["error"]["details"]["header"] == "Origin"
        assert token_of(live) not in answer.text


def test_credential_answers_are_not_stored(live: Server) -> None:
    session = httpx.post(
        f"{live.url}/api/v1/session", headers={"Authorization": f"Bearer {token_of(live)}"}
    )
    assert session.status_code == 200 and session.headers["Cache-Control"] == "no-store"
    # (token rotation: test_rotation_says_no_store, last, as it ends every session)


def _raw_statuses(live: Server, headers: list[tuple[str, str]], method: str, path: str) -> int:
    reply = exchange(
        ("127.0.0.1", port_of(live)),
        request_bytes(method, path, headers, host=host_of(live, "127.0.0.1")),
    )
    assert reply.status is not None, reply.describe()
    assert token_of(live).encode() not in reply.raw
    if reply.status == 401:
        body = reply.json()
        assert body["error"]["code"] == "UNAUTHORIZED" and "times" in body["error"]["message"]
    return reply.status


def test_a_duplicated_credential_header_is_unauthorized(live: Server) -> None:
    token = token_of(live)
    bearer = ("Authorization", f"Bearer {token}")
    assert _raw_statuses(live, [bearer], "GET", "/api/v1/formations") == 200
    assert _raw_statuses(live, [bearer, bearer], "GET", "/api/v1/formations") == 401
    assert _raw_statuses(live, [bearer, ("authorization", "x")], "GET", "/api/v1/status") == 401
    creds = json.loads((live.home / "server" / "credentials.json").read_text())
    signed = Signer(creds["key_id"], creds["secret_key"]).headers("GET", "/rpc/formations")
    assert _raw_statuses(live, signed, "GET", "/rpc/formations") == 200
    for index in range(3):  # each of X-MUXI-Key-ID, -Timestamp, -Signature given twice
        twice = [*signed, signed[index]]
        assert _raw_statuses(live, twice, "GET", "/rpc/formations") == 401
    muxi = muxi_hmac.authorization(creds["key_id"], creds["secret_key"], "GET", b"/rpc/formations")
    pair = ("Authorization", muxi)
    assert _raw_statuses(live, [pair], "GET", "/rpc/formations") == 200
    assert _raw_statuses(live, [pair, pair], "GET", "/rpc/formations") == 401
    # The proxy passes a client's headers on as they came: the formation's business.
    theirs = ("Authorization", "Bearer the-formations-own")
    assert _raw_statuses(live, [theirs, theirs], "GET", "/api/alpha/echo-headers") == 200


WEBSOCKET = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


@pytest.mark.parametrize(
    "path",
    ["/api/alpha/", "/api/alpha/ws", "/rpc/formations", "/api/v1/events", "/ui/", "/nowhere"],
)
def test_a_websocket_upgrade_is_a_clear_400_without_a_traceback(live: Server, path: str) -> None:
    before = tracebacks(live)
    for _ in range(3):
        reply = exchange(
            ("127.0.0.1", port_of(live)),
            request_bytes("GET", path, WEBSOCKET, host=host_of(live, "127.0.0.1")),
        )
        assert reply.status == 400, reply.describe()
        body = reply.json()
        assert body["error"]["code"] == body["code"] == "INVALID_REQUEST"
        assert "WebSocket" in body["error"]["message"] and body["error"]["details"]["path"] == path
    assert httpx.get(f"{live.url}/health").status_code == 200
    assert tracebacks(live) == before, live.log_tail()


def _h2_websocket(live: Server, path: str) -> tuple[int, bytes]:
    """A WebSocket over HTTP/2 (RFC 8441's extended CONNECT, which Hypercorn offers): the
    status and body fsup answers with."""
    import h2.config  # noqa: PLC0415 - only when the h2 package is there
    import h2.connection  # noqa: PLC0415
    import h2.events  # noqa: PLC0415

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    status, body = 0, b""
    with socket.create_connection(("127.0.0.1", port_of(live)), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        sent = False
        while True:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged) and not sent:
                    conn.send_headers(
                        1,
                        [
                            (":method", "CONNECT"),
                            (":protocol", "websocket"),
                            (":scheme", "http"),
                            (":path", path),
                            (":authority", host_of(live, "127.0.0.1")),
                            ("sec-websocket-version", "13"),
                        ],
                    )
                    sent = True
                elif isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return status, body
            sock.sendall(conn.data_to_send())
    return status, body


@pytest.mark.parametrize("path", ["/api/alpha/ws", "/rpc/formations", "/api/v1/events", "/ui/"])
def test_a_websocket_over_http2_is_a_clear_400_too(live: Server, path: str) -> None:
    if importlib.util.find_spec("h2") is None:
        pytest.skip("the h2 package is not installed: no HTTP/2 client")
    before = tracebacks(live)
    status, body = _h2_websocket(live, path)
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["code"] == "INVALID_REQUEST" and "WebSocket" in error["message"]
    assert tracebacks(live) == before, live.log_tail()


def _log_texts(live: Server) -> str:
    return (live.home / "server" / "logs" / "fsup.log").read_text(errors="replace") + (
        live.home / "fsup-test.log"
    ).read_text(errors="replace")


def _credentialed_requests(live: Server, client: httpx.Client) -> list[str]:
    """Requests carrying each kind of credential; the secrets they carried."""
    token = token_of(live)
    cookie = new_cookie(live)
    creds = json.loads((live.home / "server" / "credentials.json").read_text())
    signed = Signer(creds["key_id"], creds["secret_key"]).headers("GET", "/rpc/formations")
    muxi = muxi_hmac.authorization(creds["key_id"], creds["secret_key"], "GET", b"/rpc/formations")
    answers = [
        client.get(f"{live.url}/api/v1/status", headers={"Authorization": f"Bearer {token}"}),
        client.get(f"{live.url}/api/v1/session/check", headers={"Cookie": f"rm_session={cookie}"}),
        client.get(f"{live.url}/rpc/formations", headers=signed),
        client.get(f"{live.url}/rpc/formations", headers={"Authorization": muxi}),
    ]
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    return [token, cookie, signed[2][1], muxi.rsplit("signature=", 1)[1], creds["secret_key"]]


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "h2c"])
def test_no_secret_reaches_the_log_at_debug(live: Server, http2: bool) -> None:
    if http2 and importlib.util.find_spec("h2") is None:
        pytest.skip("the h2 package is not installed: no HTTP/2 client")
    auth = {"Authorization": f"Bearer {token_of(live)}"}
    # fsup writes one debug line per request it answers itself (method, path, status)
    lines = (
        "GET /api/v1/status: 200",
        "GET /api/v1/session/check: 200",
        "GET /rpc/formations: 200",
    )
    before = _log_texts(live)
    level = httpx.patch(f"{live.url}/api/v1/settings", headers=auth, json={"log_level": "debug"})
    assert level.json() == {"log_level": "debug"}
    try:
        with httpx.Client(http1=not http2, http2=http2, trust_env=False, timeout=30) as client:
            secrets = _credentialed_requests(live, client)
            version = client.get(f"{live.url}/api/v1/version", headers=auth).http_version
            forged = client.get(f"{live.url}/api/v1/nowhere%0Aforged=1", headers=auth)
            assert forged.status_code == 404
        assert version == ("HTTP/2" if http2 else "HTTP/1.1")
    finally:
        httpx.patch(f"{live.url}/api/v1/settings", headers=auth, json={"log_level": "info"})
    text = _log_texts(live)
    assert "log level set to debug" in text
    for line in lines:  # the credentialed requests were logged at debug, their secrets not
        assert text.count(line) > before.count(line), line
    assert text.count("GET /rpc/formations: 200") >= before.count("GET /rpc/formations: 200") + 2
    # a path's decoded newline is written as an escape, never as a line of its own
    assert "GET /api/v1/nowhere\\nforged=1: 404" in text
    assert not any(line.startswith("forged") for line in text.splitlines())
    for secret in secrets:
        assert secret not in text, "a credential reached fsup's log"


def test_a_null_log_level_is_a_bad_request(live: Server) -> None:
    auth = {"Authorization": f"Bearer {token_of(live)}"}
    answer = httpx.patch(f"{live.url}/api/v1/settings", headers=auth, json={"log_level": None})
    assert answer.status_code == 400 and answer.json()["error"]["details"]["field"] == "log_level"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_over_ipv6_the_loopback_names_open_and_others_do_not(tmp_path: Path) -> None:
    if not _has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1): [::1] is tested as a Host only")
    home = tmp_path / "muxi"
    home.mkdir()
    server = Server(home).start("--host", "::1")
    try:
        assert server.url.startswith("http://[::1]:")
        port = port_of(server)
        bootstrap = f"{server.url}/api/v1/auth/bootstrap"
        assert httpx.get(bootstrap, trust_env=False).json() == {"token": token_of(server)}
        assert httpx.get(bootstrap, headers={"Host": f"localhost:{port}"}).status_code == 200
        forbidden(httpx.get(bootstrap, headers={"Host": f"{FOREIGN}:{port}"}), f"{FOREIGN}:{port}")
    finally:
        assert server.stop() == 0, server.log_tail()


def test_rotation_says_no_store(live: Server) -> None:
    """Last: rotating the token ends every session of the module's server."""
    auth = {"Authorization": f"Bearer {token_of(live)}"}
    rotated = httpx.post(f"{live.url}/api/v1/token/rotate", headers=auth)
    assert rotated.status_code == 200 and rotated.headers["Cache-Control"] == "no-store"
    assert rotated.json()["token"] == token_of(live)


def absolute(server: Server, name: str, path: str, host: str) -> bytes:
    """A request whose target is an absolute URL (RFC 9112 3.2.2) naming `name`."""
    target = f"http://{host_of(server, name)}{path}"
    return request_bytes("GET", target, [("Connection", "close")], host=host)


def test_an_absolute_target_naming_another_server_is_refused(live: Server) -> None:
    """The target's authority overrides the Host: `GET http://evil.example:PORT/...` with
    `Host: 127.0.0.1:PORT` named evil.example, and Quart kept only the path (the token was
    handed out). Either naming another server is now a 403 naming the target."""
    addr = ("127.0.0.1", port_of(live))
    for path in ("/api/v1/auth/bootstrap", "/ui/", "/openapi.json"):
        reply = exchange(addr, absolute(live, FOREIGN, path, host_of(live, "127.0.0.1")))
        assert reply.status == 403, reply.describe()
        error = reply.json()["error"]
        assert error["code"] == "FORBIDDEN" and FOREIGN in error["message"], error
        assert error["details"]["target"] == f"http://{host_of(live, FOREIGN)}{path}"
        assert token_of(live).encode() not in reply.raw
    # the Host is still checked too
    reply = exchange(addr, absolute(live, "127.0.0.1", BOOTSTRAP, host_of(live, FOREIGN)))
    assert reply.status == 403 and token_of(live).encode() not in reply.raw, reply.describe()


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", LISTED])
def test_an_absolute_target_naming_this_server_is_answered(live: Server, name: str) -> None:
    addr = ("127.0.0.1", port_of(live))
    reply = exchange(addr, absolute(live, name, BOOTSTRAP, host_of(live, name)))
    assert reply.status == 200 and reply.json() == {"token": token_of(live)}, reply.describe()

"""Hostile trust (issue 17, items 2, 8 and 10): a `Host` that does not name this server (DNS
rebinding) in every shape (foreign, with a user part, an IPv6 zone, a port out of range or
not a number, two of them, empty, missing), an `Origin` of `null` or of another site on the
bootstrap, credential headers given twice, WebSocket upgrades, and credentials sent while
fsup logs at debug.

The refused requests would change something if they got through (create a search, stop a
formation) or hand out the token, so the snapshot after each case shows a bypass even if
the status lied. The Hosts the rule accepts (mixed case, a trailing dot, any loopback name)
are sent too: they must work, and change nothing either.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import httpx
import pytest
from hostile_contract import assert_error, assert_unparseable_refused
from hostile_kit import Target
from hostile_wire import Reply, exchange, request_bytes

from supervisor.core import muxi_hmac

pytestmark = pytest.mark.e2e

FLEET = ("alpha",)
SEARCH = b'{"keyword": "rebound", "autostart": false}'
STOP = "/rpc/formations/alpha/stop"


def port(target: Target) -> int:
    return target.addr[1]


@dataclass(frozen=True)
class Door:
    """A browser-reachable request that changes something or hands out a secret."""

    method: str
    path: str
    auth: str = "none"  # none | bearer
    body: bytes = b""


DOORS = {
    "bootstrap": Door("GET", "/api/v1/auth/bootstrap"),
    "create-search": Door("POST", "/api/v1/searches", "bearer", SEARCH),
    "stop-formation": Door("POST", "/api/v1/formations/alpha/stop", "bearer"),
    "rotate-token": Door("POST", "/api/v1/token/rotate", "bearer"),
    "ui": Door("GET", "/ui/"),
    "openapi": Door("GET", "/openapi.json"),
}


def knock(
    target: Target,
    door: Door,
    hosts: list[str] | None,
    version: str = "HTTP/1.1",
    *,
    token_expected: bool = False,
) -> Reply:
    """`door` with exactly the Host headers given (None or []: no Host at all); only an
    answer the token is expected in may carry it."""
    headers = [("Host", host) for host in hosts or []]
    if door.auth == "bearer":
        headers.append(("Authorization", f"Bearer {target.token}"))
    if door.body:
        headers.append(("Content-Type", "application/json"))
    raw = request_bytes(door.method, door.path, headers, door.body, host=None, version=version)
    return exchange(target.addr, raw) if token_expected else target.send(raw)


# (id, Host, a fragment of the refusal)
FOREIGN_HOSTS = [
    ("rebinding", "evil.example:{port}", "is not a name of this server"),
    ("rebinding-no-port", "evil.example", "is not a name of this server"),
    ("loopback-lookalike", "localhost.evil.example:{port}", "is not a name of this server"),
    ("subdomain-of-localhost", "a.localhost:{port}", "is not a name of this server"),
    ("decimal-ip", "2130706433:{port}", "is not a name of this server"),
    ("userinfo", "evil@127.0.0.1:{port}", "user part"),
    ("userinfo-after", "127.0.0.1:{port}@evil.example", "user part"),
    ("ipv6-zone", "[fe80::1%eth0]:{port}", "IPv6 zone"),
    ("ipv6-zone-encoded", "[fe80::1%25lo]:{port}", "IPv6 zone"),
    ("ipv6-unbracketed", "::1", "in brackets"),
    ("port-out-of-range", "127.0.0.1:65536", "out of range"),
    ("port-zero", "localhost:0", "out of range"),
    ("port-not-numeric", "localhost:http", "not a number"),
    ("port-empty", "localhost:", "empty"),
    ("two-trailing-dots", "localhost..:{port}", "labels"),
    ("empty", "", "empty"),
]


@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize(
    ("host", "fragment"), [pytest.param(h, f, id=i) for i, h, f in FOREIGN_HOSTS]
)
def test_a_host_that_does_not_name_fsup_is_forbidden(
    target: Target, door: str, host: str, fragment: str
) -> None:
    value = host.format(port=port(target))
    reply = knock(target, DOORS[door], [value])
    error = assert_error(reply, 403, "FORBIDDEN")
    assert fragment in error["message"], error
    assert error["details"]["host"] == value


ACCEPTED_HOSTS = [
    ("ipv4", "127.0.0.1:{port}"),
    ("localhost", "localhost:{port}"),
    ("ipv6", "[::1]:{port}"),
    ("mixed-case", "LocalHost:{port}"),
    ("trailing-dot", "localhost.:{port}"),
    ("no-port", "localhost"),
    ("other-loopback", "127.1.2.3:{port}"),
]


@pytest.mark.parametrize(("host"), [pytest.param(h, id=i) for i, h in ACCEPTED_HOSTS])
def test_a_host_that_names_fsup_works(target: Target, host: str) -> None:
    reply = knock(target, DOORS["bootstrap"], [host.format(port=port(target))], token_expected=True)
    assert reply.status == 200 and reply.json() == {"token": target.token}, reply.describe()
    assert reply.header("Cache-Control") == "no-store"


def test_two_hosts_are_refused_by_the_parser(target: Target) -> None:
    """h11 refuses two Host headers (RFC 9112 3.2) before fsup sees them: a bodiless 400."""
    hosts = [f"127.0.0.1:{port(target)}", f"evil.example:{port(target)}"]
    assert_unparseable_refused(knock(target, DOORS["bootstrap"], hosts))
    assert_unparseable_refused(knock(target, DOORS["bootstrap"], list(reversed(hosts))))


def test_a_missing_host_is_refused(target: Target) -> None:
    """HTTP/1.1 requires a Host (h11 answers 400); HTTP/1.0 may omit it, and fsup's named
    routes then refuse it (403) while `/health` still answers."""
    assert_unparseable_refused(knock(target, DOORS["bootstrap"], None))
    error = assert_error(knock(target, DOORS["bootstrap"], None, "HTTP/1.0"), 403, "FORBIDDEN")
    # (Quart gives an HTTP/1.0 request without a Host an empty one: SERVER_NAME is unset)
    assert "no Host" in error["message"] or "it is empty" in error["message"], error
    health = target.send(request_bytes("GET", "/health", host=None, version="HTTP/1.0"))
    assert health.status == 200, health.describe()


# (id, absolute-form target's authority, a fragment of the refusal): the Host is loopback,
# the target's authority (which overrides it, RFC 9112 3.2.2) is not; Quart keeps only the
# path, so this rebinding page got the token before.
FOREIGN_TARGETS = [
    ("rebinding", "http://evil.example:{port}", "not this server"),
    ("rebinding-https", "HTTPS://evil.example", "not this server"),
    ("userinfo", "http://127.0.0.1:{port}@evil.example", "user part"),
    ("userinfo-before", "http://evil@127.0.0.1:{port}", "user part"),
    ("ipv6-zone", "http://[fe80::1%25lo]:{port}", "IPv6 zone"),
    ("port-out-of-range", "http://127.0.0.1:99999", "out of range"),
    ("empty-authority", "http://", "empty"),
    ("other-scheme", "ftp://127.0.0.1:{port}", "neither a path nor"),
]


@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize(
    ("authority", "fragment"), [pytest.param(a, f, id=i) for i, a, f in FOREIGN_TARGETS]
)
def test_an_absolute_target_that_does_not_name_fsup_is_forbidden(
    target: Target, door: str, authority: str, fragment: str
) -> None:
    knocked = DOORS[door]
    url = authority.format(port=port(target)) + knocked.path
    headers = [("Host", f"127.0.0.1:{port(target)}")]
    if knocked.auth == "bearer":
        headers.append(("Authorization", f"Bearer {target.token}"))
    if knocked.body:
        headers.append(("Content-Type", "application/json"))
    raw = request_bytes(knocked.method, url, headers, knocked.body, host=None)
    error = assert_error(target.send(raw), 403, "FORBIDDEN")
    assert fragment in error["message"], error
    assert error["details"]["target"] == url[:100]


UNENCODABLE = [
    ("empty-label", "a..b:{port}"),
    ("long-label", "a" * 64 + ":{port}"),
    ("leading-dot", ".localhost:{port}"),
]


@pytest.mark.parametrize("path", ["/health", "/api/alpha/echo", "/rpc/formations"])
@pytest.mark.parametrize("host", [pytest.param(h, id=i) for i, h in UNENCODABLE])
def test_a_host_the_router_cannot_encode_breaks_nothing(
    target: Target, path: str, host: str
) -> None:
    """Werkzeug IDNA-encodes the Host to bind its router: `a..b` raised while the request
    context was made, a 500 and tracebacks on every route (found by this corpus)."""
    reply = target.request("GET", path, [("Host", host.format(port=port(target)))])
    if path == "/rpc/formations":
        assert_error(reply, 401, "UNAUTHORIZED")  # unsigned: the Host is not its business
    else:
        assert reply.status == 200, reply.describe()


ORIGINS = [
    ("null", "null", "opaque origin"),
    ("foreign", "http://evil.example:{port}", "is not this server"),
    ("foreign-https", "https://evil.example", "is not this server"),
    ("loopback-lookalike", "http://127.0.0.1.evil.example:{port}", "is not this server"),
    ("with-path", "http://localhost:{port}/ui/", "no path"),
    ("with-userinfo", "http://evil@localhost:{port}", "user part"),
    ("not-http", "chrome-extension://abcdef", "http://host"),
    ("ipv6-zone", "http://[fe80::1%eth0]:{port}", "IPv6 zone"),
]


@pytest.mark.parametrize(("origin", "fragment"), [pytest.param(o, f, id=i) for i, o, f in ORIGINS])
def test_the_bootstrap_refuses_an_origin_other_than_fsup(
    target: Target, origin: str, fragment: str
) -> None:
    headers = [("Origin", origin.format(port=port(target)))]
    reply = target.request("GET", "/api/v1/auth/bootstrap", headers)
    error = assert_error(reply, 403, "FORBIDDEN")
    assert fragment in error["message"] and error["details"]["header"] == "Origin", error


def test_two_origins_are_refused(target: Target) -> None:
    own = f"http://127.0.0.1:{port(target)}"
    reply = target.request("GET", "/api/v1/auth/bootstrap", [("Origin", own), ("Origin", own)])
    assert_error(reply, 403, "FORBIDDEN")


def test_the_bootstrap_answers_its_own_origin(target: Target) -> None:
    headers = [("Origin", f"http://localhost:{port(target)}")]
    reply = exchange(
        target.addr,
        request_bytes("GET", "/api/v1/auth/bootstrap", headers, host=target.host_header),
    )
    assert reply.status == 200 and reply.json() == {"token": target.token}, reply.describe()


def _signed_stop(target: Target) -> list[tuple[str, str]]:
    return target.signer.headers("POST", STOP)


DUPLICATES = [
    ("key-id", 0),
    ("timestamp", 1),
    ("signature", 2),
]


@pytest.mark.parametrize(("index"), [pytest.param(i, id=n) for n, i in DUPLICATES])
@pytest.mark.parametrize("same", [True, False], ids=["same-value", "other-value"])
def test_a_signed_header_given_twice_is_unauthorized(
    target: Target, index: int, same: bool
) -> None:
    """The stop would go through if the first copy were read and the second ignored."""
    signed = _signed_stop(target)
    name, value = signed[index]
    extra = (name, value if same else value[:-2] + "xx")
    for headers in ([*signed, extra], [extra, *signed]):
        reply = target.send(request_bytes("POST", STOP, headers, host=target.host_header))
        error = assert_error(reply, 401, "UNAUTHORIZED")
        assert "2 times" in error["message"] and error["details"]["header"] == name


def test_a_muxi_authorization_given_twice_is_unauthorized(target: Target) -> None:
    creds = target.signer
    good = muxi_hmac.authorization(creds.key_id, creds.secret_key, "POST", STOP.encode())
    for pair in ([good, good], [good, "MUXI-HMAC key=x, timestamp=1, signature=y"]):
        headers = [("Authorization", value) for value in pair]
        reply = target.send(request_bytes("POST", STOP, headers, host=target.host_header))
        assert_error(reply, 401, "UNAUTHORIZED")


def test_a_bearer_given_twice_is_unauthorized(target: Target) -> None:
    for second in (f"Bearer {target.token}", "Bearer " + "0" * 64):
        headers = [
            ("Authorization", f"Bearer {target.token}"),
            ("authorization", second),
            ("Content-Type", "application/json"),
        ]
        reply = target.send(
            request_bytes("POST", "/api/v1/searches", headers, SEARCH, host=target.host_header)
        )
        assert_error(reply, 401, "UNAUTHORIZED")


WEBSOCKET = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


@pytest.mark.parametrize(
    "path",
    ["/api/alpha/", "/api/alpha/socket", "/rpc/formations", STOP, "/api/v1/events", "/ui/", "/"],
)
def test_a_websocket_upgrade_is_a_clear_400(target: Target, path: str) -> None:
    """Once: 500 and two tracebacks per request (the error handlers read `request`)."""
    for _ in range(5):
        reply = target.request("GET", path, WEBSOCKET)
        error = assert_error(reply, 400, "INVALID_REQUEST")
        assert "WebSocket" in error["message"] and error["details"]["upgrade"] == "websocket"


def test_a_websocket_under_a_foreign_host_learns_nothing(target: Target) -> None:
    reply = target.request(
        "GET", "/api/v1/events", [("Host", f"evil.example:{port(target)}"), *WEBSOCKET]
    )
    assert_error(reply, 400, "INVALID_REQUEST")
    assert target.token.encode() not in reply.raw


def _log_text(target: Target) -> str:
    logs = target.home / "server" / "logs" / "fsup.log"
    return logs.read_text(errors="replace") + target.server.log_tail()


def test_credentials_sent_at_debug_never_reach_the_log(target: Target) -> None:
    """At debug, the HTTP/2 header codec once logged every header it decoded."""
    cookie_answer = target.http.post(
        "/api/v1/session", headers={"Authorization": f"Bearer {target.token}"}
    )
    cookie = cookie_answer.cookies["rm_session"]
    assert target.api("PATCH", "/settings", {"log_level": "debug"}) == {"log_level": "debug"}
    sent: list[str] = [target.token, cookie]
    try:
        clients = [httpx.Client(base_url=target.url, trust_env=False, timeout=10)]
        if importlib.util.find_spec("h2") is not None:
            clients.append(
                httpx.Client(
                    base_url=target.url, trust_env=False, timeout=10, http1=False, http2=True
                )
            )
        for client in clients:
            with client:
                signed = target.signer.headers("GET", "/rpc/formations")
                sent.append(signed[2][1])
                answers = [
                    client.get("/rpc/formations", headers=signed),
                    client.get(
                        "/api/v1/status", headers={"Authorization": f"Bearer {target.token}"}
                    ),
                    client.get("/api/v1/session/check", headers={"Cookie": f"rm_session={cookie}"}),
                ]
                assert [a.status_code for a in answers] == [200, 200, 200]
    finally:
        assert target.api("PATCH", "/settings", {"log_level": "info"}) == {"log_level": "info"}
    text = _log_text(target)
    for secret in [*sent, target.signer.secret_key]:
        assert secret not in text, "a credential reached fsup's log"


@pytest.mark.parametrize("value", ["null", '"loud"', "10", '"DEBUG"', '""'])
def test_a_log_level_that_is_not_a_level_is_refused(target: Target, value: str) -> None:
    body = b'{"log_level": ' + value.encode() + b"}"
    reply = target.request(
        "PATCH", "/api/v1/settings", [("Content-Type", "application/json")], body, auth="bearer"
    )
    error = assert_error(reply, 400, "INVALID_REQUEST")
    assert error["details"]["field"] == "log_level"
    assert target.api("GET", "/settings") == {"log_level": "info"}

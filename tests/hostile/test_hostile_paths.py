"""Hostile paths and encodings on the proxy `/api/{id}/...`: encoded slashes and `@` after the
id, `..` and `%2e%2e`, `//host`, backslashes, ids that differ only in encoding, absolute-form
request targets.

The proxy may reach nothing but the formation's own port. A canary TCP server of the test's
own listens on another loopback port, and every path below names it: it must receive no
connection at all. No answer may carry fsup's bearer token (fsup's own port is named too, with
`/api/v1/auth/bootstrap`). Each case either is refused (a 400/404 in the contract's shape;
Hypercorn's bodiless 400 only for a target that is no valid HTTP) or, where the path is merely
odd, is answered by the named formation itself (its pid in the echo, a path that begins with
`/`): never by another formation, never by the canary.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hostile_contract import BOUND_S, assert_error
from hostile_kit import Target
from hostile_wire import Reply, request_bytes

pytestmark = pytest.mark.e2e

FLEET = ("alpha", "beta")


class Canary:
    """A TCP listener that records every connection (and what it was sent), and answers
    anything with a page no formation would serve."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.hits: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                self.hits.append(data or b"<connected, sent nothing>")
                body = b"CANARY-REACHED"
                try:
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close"
                        b"\r\n\r\n%s" % (len(body), body)
                    )
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()

    def check(self) -> list[str]:
        if not self.hits:
            return []
        seen, self.hits = self.hits, []
        return [f"the canary on port {self.port} was reached through fsup: {seen[:3]!r}"]


@pytest.fixture(scope="module")
def canary(target: Target) -> Iterator[Canary]:
    """The canary, checked after every case with the rest of the snapshot."""
    watcher = Canary()
    target.extra_checks.append(watcher.check)
    yield watcher
    target.extra_checks.remove(watcher.check)
    watcher.close()


@dataclass(frozen=True)
class PathCase:
    id: str
    target: str  # {canary} and {fsup} are replaced by the ports
    expect: str  # "refuse", or the formation that may answer ("alpha", "beta")
    method: str = "GET"


PATH_CASES = [
    # an encoded slash (or @) right after the id: the old open relay
    PathCase("enc-slash-at-canary", "/api/alpha%2F@127.0.0.1:{canary}/steal", "refuse"),
    PathCase("enc-slash-lowercase-at-canary", "/api/alpha%2f@127.0.0.1:{canary}/steal", "refuse"),
    PathCase("enc-slash-at-localhost-canary", "/api/alpha%2F@localhost:{canary}/steal", "refuse"),
    PathCase(
        "enc-slash-at-fsup-bootstrap",
        "/api/alpha%2F@127.0.0.1:{fsup}/api/v1/auth/bootstrap",
        "refuse",
    ),
    PathCase(
        "enc-slash-at-ipv6-loopback", "/api/alpha%2F@[::1]:{fsup}/api/v1/auth/bootstrap", "refuse"
    ),
    PathCase("enc-double-slash-canary", "/api/alpha%2F%2F127.0.0.1:{canary}/x", "refuse"),
    PathCase("enc-slash-alone", "/api/alpha%2F", "alpha"),
    PathCase("enc-slash-before-id", "/api/%2Falpha/x", "refuse"),
    PathCase("double-encoded-slash-at", "/api/alpha%252F@127.0.0.1:{canary}/x", "refuse"),
    PathCase("enc-question-at", "/api/alpha%3F@127.0.0.1:{canary}/x", "refuse"),
    PathCase("enc-hash-at", "/api/alpha%23@127.0.0.1:{canary}/x", "refuse"),
    PathCase("raw-at-in-id", "/api/alpha@127.0.0.1:{canary}/x", "refuse"),
    PathCase("encoded-at-in-id", "/api/alpha%40127.0.0.1:{canary}/x", "refuse"),
    PathCase("userinfo-style-id", "/api/127.0.0.1:{canary}@alpha/x", "refuse"),
    PathCase("port-in-id", "/api/alpha:{canary}/x", "refuse"),
    PathCase("encoded-port-in-id", "/api/alpha%3A{canary}/x", "refuse"),
    PathCase("at-after-slash", "/api/alpha/@127.0.0.1:{canary}/x", "alpha"),
    PathCase("enc-slashes-in-rest", "/api/alpha/%2F%2F127.0.0.1:{canary}/x", "alpha"),
    PathCase("double-slash-in-rest", "/api/alpha//127.0.0.1:{canary}/x", "alpha"),
    PathCase("query-with-at", "/api/alpha?@127.0.0.1:{canary}/", "alpha"),
    PathCase("fragment-with-at", "/api/alpha#@127.0.0.1:{canary}/", "refuse"),
    # dot segments
    PathCase(
        "dotdot-encoded-rest-to-bootstrap",
        "/api/alpha/..%2F..%2Fapi%2Fv1%2Fauth%2Fbootstrap",
        "alpha",
    ),
    PathCase("dotdot-raw-rest-to-bootstrap", "/api/alpha/../../api/v1/auth/bootstrap", "alpha"),
    PathCase("pct2e-dotdot-rest", "/api/alpha/%2e%2e/%2e%2e/api/v1/auth/bootstrap", "alpha"),
    PathCase("pct2e-dotdot-id", "/api/%2e%2e/v1/auth/bootstrap", "refuse"),
    PathCase("dotdot-id-to-rpc", "/api/..%2Frpc%2Fformations", "refuse"),
    PathCase("id-slash-dotdot-beta", "/api/alpha%2F..%2Fbeta/x", "alpha"),
    PathCase("overlong-utf8-dots", "/api/%C0%AE%C0%AE/x", "refuse"),
    # hosts in the path
    PathCase("double-slash-host", "//127.0.0.1:{canary}/x", "refuse"),
    PathCase("backslash-at-in-id", "/api/alpha\\@127.0.0.1:{canary}/x", "refuse"),
    PathCase("encoded-backslash-at-in-id", "/api/alpha%5C@127.0.0.1:{canary}/x", "refuse"),
    PathCase("encoded-backslashes-in-rest", "/api/alpha/%5C%5C127.0.0.1:{canary}/x", "alpha"),
    # absolute-form and authority-form request targets
    PathCase("absolute-form-canary", "http://127.0.0.1:{canary}/x", "refuse"),
    PathCase("absolute-form-canary-proxy-path", "http://127.0.0.1:{canary}/api/alpha/x", "alpha"),
    PathCase("absolute-form-userinfo", "http://alpha@127.0.0.1:{canary}/api/alpha/x", "alpha"),
    PathCase("connect-canary", "127.0.0.1:{canary}", "refuse", "CONNECT"),
    # ids that differ only in encoding
    PathCase("id-encoded-letter", "/api/%61lpha/x", "alpha"),
    PathCase("id-encoded-letter-beta", "/api/be%74a/x", "beta"),
    PathCase("id-uppercase", "/api/ALPHA/x", "refuse"),
    PathCase("id-nul", "/api/alpha%00/x", "refuse"),
    PathCase("id-trailing-space", "/api/alpha%20/x", "refuse"),
    PathCase("id-trailing-newline", "/api/alpha%0A/x", "refuse"),
    PathCase("id-zero-width-space", "/api/%E2%80%8Balpha/x", "refuse"),
    PathCase("id-fullwidth", "/api/%EF%BD%81lpha/x", "refuse"),
    PathCase("id-10000-chars", "/api/" + "a" * 10_000 + "/x", "refuse"),
    PathCase("rest-8000-chars", "/api/alpha/" + "r" * 8000, "alpha"),
]

REFUSALS = (400, 404, 405, 414)
REFUSAL_CODES = ("INVALID_REQUEST", "NOT_FOUND", "FORMATION_NOT_FOUND", "METHOD_NOT_ALLOWED")


def assert_refused(reply: Reply) -> None:
    """A contract refusal; for a target that is no valid HTTP, Hypercorn's bodiless 400."""
    if reply.status == 400 and not reply.body.strip():
        assert reply.elapsed <= BOUND_S, reply.describe()
        return
    assert_error(reply, REFUSALS, REFUSAL_CODES)


def assert_served_by(reply: Reply, pid: int, formation_id: str) -> None:
    """Answered by the formation's own process, or refused as ambiguous (400)."""
    if reply.status is not None and reply.status >= 400:
        assert_refused(reply) if reply.status == 400 else assert_error(reply, 400)
        return
    assert reply.status == 200, reply.describe()
    seen = reply.json()
    assert seen.get("pid") == pid, f"not answered by {formation_id} (pid {pid}): {seen}"
    assert str(seen.get("path", "")).startswith("/"), seen


@pytest.mark.parametrize("case", PATH_CASES, ids=lambda c: c.id)
def test_proxy_path_reaches_only_the_formation(
    target: Target, canary: Canary, case: PathCase
) -> None:
    pids = target.formation_pids()
    raw_target = case.target.format(canary=canary.port, fsup=target.addr[1])
    data = request_bytes(case.method, raw_target, host=target.host_header)
    reply = target.send(data)
    assert b"CANARY-REACHED" not in reply.raw, "the canary answered through fsup"
    if case.expect == "refuse":
        assert_refused(reply)
    else:
        assert_served_by(reply, pids[case.expect], case.expect)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        pytest.param("Host", "127.0.0.1:{canary}", id="host-names-canary"),
        pytest.param("Host", "alpha%2F@127.0.0.1:{canary}", id="host-with-relay-syntax"),
        pytest.param("X-Forwarded-Host", "127.0.0.1:{canary}", id="forwarded-host-canary"),
        pytest.param("X-Formation-ID", "beta", id="formation-id-header-beta"),
    ],
)
def test_proxy_headers_do_not_pick_the_upstream(
    target: Target, canary: Canary, header: str, value: str
) -> None:
    """Headers that name another host or formation change nothing: alpha answers."""
    pid = target.formation_pids()["alpha"]
    headers = [(header, value.format(canary=canary.port))]
    if header != "Host":
        headers.append(("Host", target.host_header))
    reply = target.send(request_bytes("GET", "/api/alpha/echo", headers, host=None))
    assert_served_by(reply, pid, "alpha")


def test_trace_is_not_proxied(target: Target, canary: Canary) -> None:
    """A method the proxy does not carry: 405 in the contract's shape."""
    reply = target.send(request_bytes("TRACE", "/api/alpha/x", host=target.host_header))
    assert_error(reply, 405)


RPC_ID_CASES = [
    # (id, method, raw path): signed, so only the id is at fault
    ("stop-id-with-encoded-slash", "POST", "/rpc/formations/alpha%2Fstop"),
    ("stop-id-nul", "POST", "/rpc/formations/alpha%00/stop"),
    ("stop-id-newline", "POST", "/rpc/formations/alpha%0A/stop"),
    ("stop-id-uppercase", "POST", "/rpc/formations/ALPHA/stop"),
    ("stop-id-traversal", "POST", "/rpc/formations/..%2Fformations%2Falpha/stop"),
    ("delete-id-dotdot-encoded", "DELETE", "/rpc/formations/%2e%2e"),
    ("delete-id-alpha-slash-dotdot", "DELETE", "/rpc/formations/alpha%2F.."),
    ("delete-id-up-to-server", "DELETE", "/rpc/formations/..%2F..%2Fserver"),
    ("delete-id-absolute", "DELETE", "/rpc/formations/%2Ftmp"),
    ("logs-id-traversal", "GET", "/rpc/formations/..%2F..%2Fserver/logs"),
    ("download-id-traversal", "GET", "/rpc/formations/..%2F..%2Fserver/download"),
    ("download-id-up-to-home", "GET", "/rpc/formations/..%2F..%2F..%2F/download?db=true"),
    ("get-id-10000-chars", "GET", "/rpc/formations/" + "a" * 10_000),
]


@pytest.mark.parametrize(("method", "path"), [pytest.param(m, p, id=i) for i, m, p in RPC_ID_CASES])
def test_rpc_route_with_a_hostile_id(target: Target, method: str, path: str) -> None:
    """A signed management call naming a formation by a hostile id: refused (400/404), and
    no formation, file or secret is touched (the snapshot and the secret check tell)."""
    reply = target.request(method, path, auth="signed")
    assert_refused(reply)

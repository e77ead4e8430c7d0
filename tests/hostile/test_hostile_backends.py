"""Hostile formations behind the proxy, and clients that try to speak for fsup (issue 17).

The formation `mis` (tests/fixtures/misbehaving.py, raw sockets) writes two answers at once,
dies inside a chunk, closes before its Content-Length, sends both framings. Through fsup's
proxy, on raw sockets: no client ever gets another request's answer, a cut answer is never
ended cleanly (no last chunk, no full length: the connection closes), contradictory framing is
a 502 in the contract's shape. Clients that send the headers fsup sets (`X-Forwarded-*`,
`X-Formation-ID`, `Remote-Addr`) or a WebSocket upgrade get nothing more than any client.
Nothing changes and no traceback is logged (checked after every case).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_for
from hostile_contract import assert_error
from hostile_kit import Target
from hostile_wire import connect, request_bytes
from test_e2e_proxy_backends import answered, misbehaving_bundle

pytestmark = pytest.mark.e2e

FLEET = ("alpha",)
MIS = "mis"


@pytest.fixture(scope="module", autouse=True)
def misbehaving(target: Target) -> Iterator[None]:
    """`mis` joins the fleet (so the repairs between cases keep it)."""
    target.rpc.deploy(misbehaving_bundle(MIS))
    target.fleet = (*target.fleet, MIS)
    yield


def raw_until_close(target: Target, path: str, bound: float = 10.0) -> bytes:
    """Everything fsup sends for one GET until it closes the connection (or `bound`)."""
    data = request_bytes("GET", path, [("Connection", "keep-alive")], host=target.host_header)
    deadline = time.monotonic() + bound
    received = b""
    with connect(target.addr, timeout=bound) as sock:
        sock.sendall(data)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
    return received


def seen_headers(target: Target, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    reply = target.request("GET", f"/api/{MIS}/headers", headers)
    assert reply.status == 200, reply.describe()
    return [(name.lower(), value) for name, value in json.loads(reply.body)]


@pytest.mark.parametrize("path", ["/double", "/double-late"])
def test_a_leftover_answer_goes_to_no_one(target: Target, path: str) -> None:
    """The next request is sent once `mis` has written the leftover (asked of it directly)."""
    port = target.rpc.call("GET", f"/rpc/formations/{MIS}")["port"]
    before = answered(port, path)
    for i in range(5):
        first = target.request("GET", f"/api/{MIS}{path}")
        assert (first.status, first.body) == (200, path.strip("/").encode()), first.describe()
        wait_for(lambda i=i: answered(port, path) > before + i)
        mine = target.request("GET", f"/api/{MIS}/mine?i={i}")
        assert (mine.status, mine.body) == (200, b"/mine?i=%d" % i), mine.describe()


def test_a_cut_chunk_is_never_ended_cleanly(target: Target) -> None:
    received = raw_until_close(target, f"/api/{MIS}/cut-chunk")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), received[:300]
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"a" * 16 in body  # what came before the cut was passed on
    assert not body.endswith(b"0\r\n\r\n"), body  # ...but no last chunk: the client can tell


def test_a_body_short_of_its_length_is_never_ended_cleanly(target: Target) -> None:
    received = raw_until_close(target, f"/api/{MIS}/short-big")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 200000" in head.lower()
    assert len(body) < 200000  # the connection closed short of the length


def test_a_small_body_short_of_its_length_is_a_502(target: Target) -> None:
    assert_error(target.request("GET", f"/api/{MIS}/short-small"), 502, "BAD_GATEWAY")


def test_contradictory_framing_is_a_502(target: Target) -> None:
    error = assert_error(target.request("GET", f"/api/{MIS}/both"), 502, "BAD_GATEWAY")
    assert error["details"]["formation_id"] == MIS


def test_a_client_cannot_speak_for_fsup(target: Target) -> None:
    seen = seen_headers(
        target,
        [
            ("X-Forwarded-For", "198.51.100.7"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "https"),
            ("X-Formation-ID", "alpha"),
            ("Remote-Addr", "203.0.113.9"),
        ],
    )
    values: dict[str, list[str]] = {}
    for name, value in seen:
        values.setdefault(name, []).append(value)
    assert values["x-forwarded-for"] == ["198.51.100.7, 127.0.0.1"]
    assert values["x-forwarded-host"] == [target.host_header]
    assert values["x-forwarded-proto"] == ["http"]
    assert values["x-formation-id"] == [MIS]
    assert values["remote-addr"] == ["203.0.113.9"]  # the client's own, alone


def test_headers_a_client_lists_in_connection_stay_with_fsup(target: Target) -> None:
    seen = dict(seen_headers(target, [("Connection", "keep-alive, X-Hop"), ("X-Hop", "1")]))
    assert "x-hop" not in seen and "connection" not in seen
    assert "remote-addr" not in seen  # none sent, none forwarded


def test_a_websocket_upgrade_is_a_400(target: Target) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    reply = target.request(
        "GET",
        f"/api/{MIS}/socket",
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    assert_error(reply, 400, "INVALID_REQUEST")
    stats: dict[str, Any] = json.loads(target.request("GET", f"/api/{MIS}/stats").body)
    assert "/socket" not in stats["paths"]

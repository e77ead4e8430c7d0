"""The proxy's target parsing: only ever 127.0.0.1:<port>, whatever the encoding."""

from __future__ import annotations

import pytest

from supervisor.core.errors import FsupError
from supervisor.http.proxy_target import (
    ProxyTarget,
    connection_tokens,
    forwardable,
    parse_target,
    upstream_url,
)

PORT = 8123


@pytest.mark.parametrize(
    ("raw", "query", "formation_id", "path"),
    [
        (b"/api/hello", b"", "hello", b"/"),
        (b"/api/hello/", b"", "hello", b"/"),
        (b"/api/hello/x/y", b"a=1&b=%2F", "hello", b"/x/y?a=1&b=%2F"),
        (b"/api/%68ello/x", b"", "hello", b"/x"),  # decoded once, compared decoded
        (b"/api/hello/%2F@evil.example:80/x", b"", "hello", b"/%2F@evil.example:80/x"),
        (b"/api/hello//evil.example/x", b"", "hello", b"//evil.example/x"),
        (b"/api/hello/..%2F..%2Fetc", b"", "hello", b"/..%2F..%2Fetc"),
        (b"/api/hello/x\\y", b"", "hello", b"/x\\y"),
    ],
)
def test_targets_that_go_to_the_formation(
    raw: bytes, query: bytes, formation_id: str, path: bytes
) -> None:
    target = parse_target(raw, query)
    assert target == ProxyTarget(formation_id, path)
    url = upstream_url(PORT, target)
    assert (url.scheme, url.host, url.port) == ("http", "127.0.0.1", PORT)
    assert url.raw_path == path


@pytest.mark.parametrize(
    "raw",
    [
        b"/api/hello%2F@evil.example:80/x",  # the relay: an encoded slash then user-info
        b"/api/hello%2f@127.0.0.1:7890/api/v1/auth/bootstrap",
        b"/api/hello%40evil/x",
        b"/api/%2e%2e/x",
        b"/api/..",
        b"/api/hello%252F/x",  # encoded twice
        b"/api/HELLO/x",
        b"/api//x",
        b"/api/",
        b"/api/hel lo",
        b"/api/hello/x#frag",
        b"/api/hello/\xff",
        b"http://evil.example/api/hello/",  # absolute-form target
        b"/rpc/formations",
        b"/api/" + b"a" * 65,
    ],
)
def test_ambiguous_or_foreign_targets_are_refused(raw: bytes) -> None:
    with pytest.raises(FsupError) as caught:
        parse_target(raw, b"")
    assert (caught.value.code, caught.value.status) == ("INVALID_REQUEST", 400)


def test_a_query_with_bytes_outside_visible_ascii_is_refused() -> None:
    with pytest.raises(FsupError):
        parse_target(b"/api/hello/", b"a=\x01")


def test_connection_listed_headers_are_hop_by_hop() -> None:
    listed = connection_tokens(["keep-alive, X-Secret", "  upgrade ,"])
    assert listed == {"keep-alive", "x-secret", "upgrade"}
    assert not forwardable("X-Secret", listed)
    assert not forwardable("Transfer-Encoding", set())
    assert forwardable("Content-Type", listed)

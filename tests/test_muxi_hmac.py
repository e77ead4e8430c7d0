"""The `Authorization: MUXI-HMAC` scheme without I/O: parsing, signing (checked against MUXI's
own SDK), the choice between schemes, and the `auth.schemes` setting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from muxi.auth import build_auth_header, generate_hmac_signature

from supervisor.core import muxi_hmac
from supervisor.core.errors import FsupError
from supervisor.core.hmac_auth import (
    MUXI_HMAC,
    SCHEMES,
    SIGNED_HEADERS,
    Credentials,
    check_head,
    claimed_key_id,
    scheme_of,
    signed_headers,
)
from supervisor.storage.config import ConfigError, ServerConfig, from_doc

CREDS = Credentials("MUXI_LOCAL_abc123", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=")
NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
SIG = "A" * 43 + "="


def test_signature_equals_the_sdk_one() -> None:
    """Same timestamp, same bytes as MUXI's SDK (the query is not signed)."""
    signature, ts = generate_hmac_signature(
        CREDS.secret_key, "GET", "/rpc/formations/a/logs?limit=5"
    )
    assert (
        muxi_hmac.sign(CREDS.secret_key, ts, "GET", b"/rpc/formations/a/logs?limit=5") == signature
    )
    assert muxi_hmac.sign(CREDS.secret_key, ts, "get", b"/rpc/formations/a/logs") == signature


def test_the_sdk_header_parses() -> None:
    value = build_auth_header(CREDS.key_id, CREDS.secret_key, "POST", "/rpc/formations/a/stop")
    parsed = muxi_hmac.parse(value)
    assert parsed.key_id == CREDS.key_id
    assert parsed.signature == muxi_hmac.sign(
        CREDS.secret_key, parsed.timestamp, "POST", b"/rpc/formations/a/stop"
    )


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (f"MUXI-HMAC key=k, timestamp={TS}, signature={SIG}", ("k", TS, SIG)),
        (f"muxi-hmac key=k,timestamp={TS},signature={SIG}", ("k", TS, SIG)),
        (f'MUXI-HMAC key="k", timestamp="{TS}", signature="{SIG}"', ("k", TS, SIG)),
        (f"MUXI-HMAC signature={SIG}, key=k, timestamp={TS}", ("k", TS, SIG)),
        (f"  MUXI-HMAC   KEY=k ,  Timestamp={TS} , signature={SIG}  ", ("k", TS, SIG)),
    ],
)
def test_parse_accepts(value: str, parsed: tuple[str, int, str]) -> None:
    got = muxi_hmac.parse(value)
    assert (got.key_id, got.timestamp, got.signature) == parsed


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "scheme is not MUXI-HMAC"),
        ("Bearer abc", "scheme is not MUXI-HMAC"),
        (f"MUXI-HMACkey=k, timestamp={TS}, signature={SIG}", "scheme is not MUXI-HMAC"),
        (f"MUXI-HMAC key=k, timestamp={TS}", "missing signature"),
        ("MUXI-HMAC", "name=value"),
        (f"MUXI-HMAC key=, timestamp={TS}, signature={SIG}", "missing key"),
        (f"MUXI-HMAC key=k, key=j, timestamp={TS}, signature={SIG}", "given twice"),
        (f"MUXI-HMAC key=k, timestamp={TS}, signature={SIG}, nonce=1", "unknown parameter"),
        (f"MUXI-HMAC key=k timestamp={TS}, signature={SIG}", "name=value"),
        (f"MUXI-HMAC key=k, timestamp=-{TS}, signature={SIG}", "unix seconds"),
        (f"MUXI-HMAC key=k, timestamp={TS}.5, signature={SIG}", "unix seconds"),
        (f"MUXI-HMAC key=k, timestamp=١٢٣, signature={SIG}", "unix seconds"),
        (f"MUXI-HMAC key=k, timestamp={'9' * 13}, signature={SIG}", "unix seconds"),
        (f"MUXI-HMAC key=k, timestamp={TS}, signature={SIG[:-1]}", "base64"),
        (f"MUXI-HMAC key=k, timestamp={TS}, signature={SIG}x", "base64"),
        (f"MUXI-HMAC key={'k' * 600}, timestamp={TS}, signature={SIG}", "longer than"),
    ],
)
def test_parse_refuses(value: str, problem: str) -> None:
    with pytest.raises(FsupError) as info:
        muxi_hmac.parse(value)
    assert info.value.code == "UNAUTHORIZED"
    assert problem in info.value.message
    assert "expected 'MUXI-HMAC key=<key id>" in info.value.message


def authorization(
    method: str = "GET", path: str = "/rpc/formations", ts: int = TS, creds: Credentials = CREDS
) -> dict[str, str]:
    return {
        "authorization": muxi_hmac.authorization(
            creds.key_id, creds.secret_key, method, path.encode(), ts
        )
    }


def test_check_head_accepts_a_good_muxi_hmac_request_without_its_body() -> None:
    headers = authorization("GET", "/rpc/formations")
    assert check_head(CREDS, headers, "GET", b"/rpc/formations", SCHEMES, NOW) is None
    assert scheme_of(headers) == MUXI_HMAC and claimed_key_id(headers) == CREDS.key_id


@pytest.mark.parametrize(
    ("headers", "method", "path", "message"),
    [
        (
            authorization(creds=Credentials("other", CREDS.secret_key)),
            "GET",
            "/rpc/formations",
            "invalid key id or signature",
        ),
        (
            authorization(creds=Credentials(CREDS.key_id, "other")),
            "GET",
            "/rpc/formations",
            "invalid key id or signature",
        ),
        (authorization("POST"), "GET", "/rpc/formations", "invalid key id or signature"),
        (
            authorization(path="/rpc/server/status"),
            "GET",
            "/rpc/formations",
            "invalid key id or signature",
        ),
        (authorization(ts=TS - 301), "GET", "/rpc/formations", "away from the server clock"),
        (authorization(ts=TS + 301), "GET", "/rpc/formations", "away from the server clock"),
        ({}, "GET", "/rpc/formations", "not signed"),
        ({"authorization": "Basic dTpw"}, "GET", "/rpc/formations", "scheme is not MUXI-HMAC"),
    ],
)
def test_check_head_refuses(headers: dict[str, str], method: str, path: str, message: str) -> None:
    with pytest.raises(FsupError) as info:
        check_head(CREDS, headers, method, path.encode(), SCHEMES, NOW)
    assert (info.value.code, info.value.status) == ("UNAUTHORIZED", 401)
    assert message in info.value.message


def test_both_schemes_at_once_are_refused() -> None:
    seed = {
        k.lower(): v
        for k, v in signed_headers(
            CREDS.key_id, CREDS.secret_key, "GET", b"/rpc/formations", b""
        ).items()
    }
    for extra in ({"x-muxi-key-id": CREDS.key_id}, seed):
        with pytest.raises(FsupError) as info:
            check_head(CREDS, {**authorization(), **extra}, "GET", b"/rpc/formations", SCHEMES)
        assert "one scheme only" in info.value.message


def test_a_scheme_turned_off_is_refused_with_the_setting_named() -> None:
    with pytest.raises(FsupError) as info:
        check_head(CREDS, authorization(), "GET", b"/rpc/formations", (SIGNED_HEADERS,), NOW)
    assert "muxi-hmac signing scheme is turned off" in info.value.message
    assert "auth.schemes" in info.value.message
    seed = {
        k.lower(): v
        for k, v in signed_headers(
            CREDS.key_id, CREDS.secret_key, "GET", b"/rpc/formations", b""
        ).items()
    }
    with pytest.raises(FsupError) as refused:
        check_head(CREDS, seed, "GET", b"/rpc/formations", (MUXI_HMAC,))
    assert "signed-headers signing scheme is turned off" in refused.value.message
    pending = check_head(CREDS, seed, "GET", b"/rpc/formations", SCHEMES)
    assert pending is not None  # the seed's scheme: the body's signature is still to check


def auth_setting(doc: object) -> tuple[str, ...] | None:
    """config.yaml's `auth:` section on its own (`{schemes: auto | [...]}`); None is auto."""
    return from_doc({"auth": doc}, "config.yaml").auth_schemes


@pytest.mark.parametrize(
    ("doc", "schemes"),
    [
        ({"schemes": "auto"}, None),
        ({}, None),
        ({"schemes": ["signed-headers"]}, ("signed-headers",)),
        ({"schemes": "muxi-hmac"}, ("muxi-hmac",)),
        (
            {"schemes": ["muxi-hmac", "signed-headers", "muxi-hmac"]},
            ("muxi-hmac", "signed-headers"),
        ),
    ],
)
def test_auth_setting(doc: dict[str, object], schemes: tuple[str, ...] | None) -> None:
    assert auth_setting(doc) == schemes


@pytest.mark.parametrize(
    "doc",
    [
        {"schemes": []},
        {"schemes": ["hmac"]},
        {"schemes": 1},
        {"scheme": "auto"},
        "auto",
        {"schemes": [["signed-headers"]]},
    ],
)
def test_auth_setting_refuses(doc: object) -> None:
    with pytest.raises(ConfigError) as info:
        auth_setting(doc)
    assert "auth" in str(info.value)


@pytest.mark.parametrize(
    ("host", "accepted"),
    [
        ("127.0.0.1", SCHEMES),
        ("::1", SCHEMES),
        ("localhost", SCHEMES),
        ("127.0.0.2", SCHEMES),
        ("0.0.0.0", (SIGNED_HEADERS,)),
        ("192.168.1.5", (SIGNED_HEADERS,)),
        ("::", (SIGNED_HEADERS,)),
        ("example.org", (SIGNED_HEADERS,)),
    ],
)
def test_auto_accepts_muxi_hmac_on_loopback_only(host: str, accepted: tuple[str, ...]) -> None:
    assert ServerConfig(host=host).accepted_schemes() == accepted
    explicit = ServerConfig(host=host, auth_schemes=(MUXI_HMAC,))
    assert explicit.accepted_schemes() == (MUXI_HMAC,)

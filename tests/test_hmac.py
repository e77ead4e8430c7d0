"""HMAC signing exactly as the seed's Go function; every field tampered; clock skew."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from supervisor.core.errors import FsupError
from supervisor.core.hmac_auth import Credentials, check_headers, check_signature, sign

CREDS = Credentials("MUXI_LOCAL_abc123", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=")
NOW = datetime(2026, 1, 26, 12, 0, 0, tzinfo=UTC)
STAMP = "2026-01-26T12:00:00Z"
PATH = b"/rpc/formations/hello/logs?lines=10&stream=all"
BODY = b'{"a": 1}'


def verify(
    creds: Credentials,
    method: str,
    path: bytes,
    body: bytes,
    headers: dict[str, str],
    now: datetime,
) -> None:
    """The seed scheme's whole check, as the RPC layer makes it: the head, then the body."""
    check_signature(creds, check_headers(creds, headers, now), method, path, body)


def headers(**override: str) -> dict[str, str]:
    base = {
        "x-muxi-key-id": CREDS.key_id,
        "x-muxi-timestamp": STAMP,
        "x-muxi-signature": sign(CREDS.secret_key, "POST", PATH, STAMP, BODY),
    }
    base.update(override)
    return base


def test_signature_matches_the_go_reference() -> None:
    # fmt.Sprintf("%s\n%s\n%s\n%s", ...) keyed with []byte(secretKey), base64 std encoding.
    canonical = f"POST\n{PATH.decode()}\n{STAMP}\n{BODY.decode()}".encode()
    expected = base64.b64encode(
        hmac.new(CREDS.secret_key.encode(), canonical, hashlib.sha256).digest()
    ).decode()
    assert sign(CREDS.secret_key, "POST", PATH, STAMP, BODY) == expected


def test_a_correct_request_passes() -> None:
    verify(CREDS, "POST", PATH, BODY, headers(), now=NOW)


def test_get_signs_an_empty_body() -> None:
    stamp_headers = headers(
        **{"x-muxi-signature": sign(CREDS.secret_key, "GET", b"/rpc/formations", STAMP, b"")}
    )
    verify(CREDS, "GET", b"/rpc/formations", b"", stamp_headers, now=NOW)


@pytest.mark.parametrize(
    ("method", "path", "body", "override"),
    [
        ("GET", PATH, BODY, {}),
        ("POST", b"/rpc/formations/other/logs?lines=10&stream=all", BODY, {}),
        ("POST", b"/rpc/formations/hello/logs?lines=11&stream=all", BODY, {}),
        ("POST", b"/rpc/formations/hello/logs", BODY, {}),
        ("POST", PATH, b'{"a": 2}', {}),
        ("POST", PATH, BODY, {"x-muxi-key-id": "MUXI_LOCAL_other"}),
        ("POST", PATH, BODY, {"x-muxi-timestamp": "2026-01-26T12:00:01Z"}),
        ("POST", PATH, BODY, {"x-muxi-signature": "AAAA"}),
        ("POST", PATH, BODY, {"x-muxi-signature": ""}),
        ("POST", PATH, BODY, {"x-muxi-key-id": ""}),
    ],
)
def test_every_tampered_field_is_refused(
    method: str, path: bytes, body: bytes, override: dict[str, str]
) -> None:
    with pytest.raises(FsupError) as info:
        verify(CREDS, method, path, body, headers(**override), now=NOW)
    assert info.value.code == "UNAUTHORIZED"


def test_path_is_taken_as_sent_not_normalised() -> None:
    raw = b"/rpc/formations/%68ello"
    signed = headers(**{"x-muxi-signature": sign(CREDS.secret_key, "POST", raw, STAMP, BODY)})
    verify(CREDS, "POST", raw, BODY, signed, now=NOW)
    with pytest.raises(FsupError):
        verify(CREDS, "POST", b"/rpc/formations/hello", BODY, signed, now=NOW)


@pytest.mark.parametrize("skew", [299, -299])
def test_skew_within_five_minutes_passes(skew: int) -> None:
    verify(CREDS, "POST", PATH, BODY, headers(), now=NOW + timedelta(seconds=skew))


@pytest.mark.parametrize("skew", [301, -301, 86400])
def test_skew_beyond_five_minutes_is_refused_with_a_hint(skew: int) -> None:
    with pytest.raises(FsupError, match="clock"):
        verify(CREDS, "POST", PATH, BODY, headers(), now=NOW + timedelta(seconds=skew))


def test_offsets_are_understood() -> None:
    stamp = "2026-01-26T13:00:00+01:00"
    signed = {
        "x-muxi-key-id": CREDS.key_id,
        "x-muxi-timestamp": stamp,
        "x-muxi-signature": sign(CREDS.secret_key, "POST", PATH, stamp, BODY),
    }
    verify(CREDS, "POST", PATH, BODY, signed, now=NOW)


@pytest.mark.parametrize("stamp", ["yesterday", "2026-01-26T12:00:00", "1769428800"])
def test_malformed_timestamps_are_refused(stamp: str) -> None:
    signed = headers(
        **{
            "x-muxi-timestamp": stamp,
            "x-muxi-signature": sign(CREDS.secret_key, "POST", PATH, stamp, BODY),
        }
    )
    with pytest.raises(FsupError) as info:
        verify(CREDS, "POST", PATH, BODY, signed, now=NOW)
    assert info.value.code == "UNAUTHORIZED"

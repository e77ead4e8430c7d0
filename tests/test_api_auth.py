"""/api/v1 authentication: token file, bearer checks, stateless session cookies."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from supervisor.api_auth import (
    SESSION_TTL_S,
    check_bearer,
    check_session,
    is_loopback,
    load_or_create_token,
    new_session,
)
from supervisor.errors import FsupError

TOKEN = "ab" * 32


def test_token_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "api.token"
    token = load_or_create_token(path)
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", f"Bearer {'cd' * 32}"])
def test_bad_bearer_headers_are_refused(header: str | None) -> None:
    with pytest.raises(FsupError) as info:
        check_bearer(TOKEN, header)
    assert info.value.code == "UNAUTHORIZED"


def test_good_bearer_passes() -> None:
    check_bearer(TOKEN, f"Bearer {TOKEN}")
    check_bearer(TOKEN, f"bearer {TOKEN}")


def test_session_cookie_round_trip_tamper_and_expiry() -> None:
    cookie, expiry = new_session(TOKEN, now=1000)
    assert expiry == 1000 + SESSION_TTL_S
    check_session(TOKEN, cookie, now=2000)
    for bad in (None, "", "abc", cookie[:-1] + "0", f"{expiry + 1}.{cookie.split('.')[1]}"):
        with pytest.raises(FsupError):
            check_session(TOKEN, bad, now=2000)
    with pytest.raises(FsupError, match="expired"):
        check_session(TOKEN, cookie, now=expiry + 1)
    with pytest.raises(FsupError):
        check_session("ef" * 32, cookie, now=2000)  # a new token ends old sessions


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.8.9.1", True),
                         ("::1", True), ("10.0.0.1", False), ("example.com", False), (None, False)])
def test_loopback_is_judged_by_address(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback

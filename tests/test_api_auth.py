"""/api/v1 authentication (token file, bearer checks, stateless session cookies) and what
else an /api/v1 client sends that must be parsed with care: JSON bodies, and whole numbers in
cookies, headers and query parameters. A hostile one is a clear 4xx naming the field."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from quart_trio import QuartTrio

from supervisor.core.errors import FsupError
from supervisor.core.hosts import is_loopback
from supervisor.core.safe_json import json_depth, loads_object, query_int, whole_number
from supervisor.http import api_v1
from supervisor.http.api_auth import (
    SESSION_TTL_S,
    check_bearer,
    check_same_origin,
    check_session,
    new_session,
)
from supervisor.http.searches import flag, json_body, keyword_of, mode_of
from supervisor.runtime.events import EventBus
from supervisor.storage.home import load_or_create_token

MiB = 1024 * 1024

TOKEN = "ab" * 32


def test_token_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "api.token"
    token, replaced = load_or_create_token(path)
    assert len(token) == 64 and int(token, 16) >= 0 and replaced is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == (token, None)


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe" + b"ab" * 31, b"", b"not a token\n", b"AB" * 32, b"ab" * 33, b"\x00" * 64],
)
def test_a_token_file_without_a_token_is_replaced_and_says_so(
    tmp_path: Path, content: bytes
) -> None:
    """Read as bytes: undecodable bytes are judged like any other content, never raised as
    a UnicodeDecodeError a caller could take for another file's fault."""
    path = tmp_path / "api.token"
    path.write_bytes(content)
    token, replaced = load_or_create_token(path)
    assert replaced is not None and f"{len(content)} other bytes" in replaced
    assert path.read_text() == token + "\n" and len(token) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == (token, None)


def test_a_token_file_that_cannot_be_read_is_the_callers_to_report(tmp_path: Path) -> None:
    path = tmp_path / "api.token"
    path.mkdir()
    with pytest.raises(IsADirectoryError):
        load_or_create_token(path)
    assert path.is_dir()


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
    signature = cookie.split(".", 1)[1]  # the nonce and the signature
    for bad in (
        None,
        "",
        "abc",
        cookie[:-1] + ("1" if cookie.endswith("0") else "0"),  # always another signature
        f"{expiry + 1}.{signature}",
        f"\u00b2.{signature}",
        f"\u0661\u0662.{signature}",
        f"{'9' * 5000}.{signature}",
        cookie + "\n",
        cookie.upper(),
        f"+{cookie}",
    ):
        with pytest.raises(FsupError):
            check_session(TOKEN, bad, now=2000)
    with pytest.raises(FsupError, match="expired"):
        check_session(TOKEN, cookie, now=expiry + 1)
    with pytest.raises(FsupError):
        check_session("ef" * 32, cookie, now=2000)  # a new token ends old sessions


def test_two_sessions_opened_in_the_same_second_differ() -> None:
    first, second = new_session(TOKEN, now=1000)[0], new_session(TOKEN, now=1000)[0]
    assert first != second
    assert check_session(TOKEN, first, now=1000)[0] != check_session(TOKEN, second, now=1000)[0]


@pytest.mark.parametrize(
    ("method", "headers", "allowed"),
    [
        ("GET", {}, True),
        ("HEAD", {"origin": "http://evil.example"}, True),
        ("POST", {"x-fsup-request": "1"}, True),
        ("POST", {"x-fsup-request": "1", "sec-fetch-site": "same-origin"}, True),
        ("DELETE", {"x-fsup-request": "1", "origin": "http://127.0.0.1:7890"}, True),
        ("POST", {}, False),
        ("PATCH", {"sec-fetch-site": "same-origin", "origin": "http://127.0.0.1:7890"}, False),
        ("POST", {"x-fsup-request": "1", "sec-fetch-site": "cross-site"}, False),
        ("POST", {"x-fsup-request": "1", "sec-fetch-site": "none"}, False),
        ("POST", {"x-fsup-request": "1", "origin": "http://127.0.0.1:7891"}, False),
        ("POST", {"x-fsup-request": "1", "origin": "null"}, False),
    ],
)
def test_cross_site_check(method: str, headers: dict[str, str], allowed: bool) -> None:
    if allowed:
        check_same_origin(method, headers, "127.0.0.1:7890")
        return
    with pytest.raises(FsupError) as info:
        check_same_origin(method, headers, "127.0.0.1:7890")
    assert info.value.code == "FORBIDDEN" and info.value.status == 403


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("example.com", False),
        (None, False),
    ],
)
def test_loopback_is_judged_by_address(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# --- JSON request bodies -------------------------------------------------------------------


def bad_json(raw: bytes, code: str = "INVALID_REQUEST") -> FsupError:
    with pytest.raises(FsupError) as info:
        loads_object(raw)
    assert info.value.code == code
    return info.value


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[" * 100_000, "deeper than 32"),
        (b'{"a":' * 50_000, "deeper than 32"),
        (b'{"keyword": ' + b"[" * 33 + b"]" * 33 + b"}", "deeper than 32"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b'{"a": -Infinity}', "-Infinity"),
        (b'{"a": 1e999}', "too large"),
        (b'{"a": ' + b"9" * 5000 + b"}", "longer than"),
        (b'{"keyword": "x", "keyword": "y"}', "twice"),
        (b"[1]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"null", "JSON object"),
        (b"17", "JSON object"),
        (b'{"a": "\xff"}', "UTF-8"),
        ('{"a": 1}'.encode("utf-16"), "UTF-8"),
        (b'{"keyword": "\\ud800"}', "surrogate"),
        (b'{"a": 1', "not valid JSON"),
        (b'{"a": 1} {"b": 2}', "not valid JSON"),
    ],
)
def test_hostile_json_bodies_are_refused(raw: bytes, words: str) -> None:
    assert words in bad_json(raw).message


def test_json_over_the_size_cap_is_too_large() -> None:
    assert bad_json(b" " * (300 * 1024) + b"{}", "PAYLOAD_TOO_LARGE").status == 413


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b'{"a": "[[[[[[[["}', 1),
        (b'{"a": "\\"[[[[["}', 1),
        (b'{"a": "\\\\", "b": [[1]]}', 3),
        (b"[" * 10 + b"]" * 10, 10),
    ],
)
def test_brackets_inside_strings_do_not_count(raw: bytes, depth: int) -> None:
    assert json_depth(raw, 32) == depth


def test_legitimate_json_with_deep_strings_and_surrogate_pairs_parses() -> None:
    body = loads_object(b'{"keyword": "[[[[ \\ud83d\\ude00", "n": [[[1.5]]]}')
    assert body["keyword"] == "[[[[ \U0001f600"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: keyword_of({"keyword": ["x"]}, True), "keyword"),
        (lambda: keyword_of({"keyword": {"a": 1}}, True), "keyword"),
        (lambda: keyword_of({"keyword": True}, True), "keyword"),
        (lambda: keyword_of({"keyword": "a\nb"}, True), "keyword"),
        (lambda: keyword_of({"keyword": "a\x00b"}, False), "keyword"),
        (lambda: mode_of({"mode": ["full"]}), "mode"),
        (lambda: mode_of({"mode": {"full": 1}}), "mode"),
        (lambda: mode_of({"mode": 1}), "mode"),
        (lambda: flag({"autostart": 1}, "autostart"), "autostart"),
        (lambda: flag({"pinned": "true"}, "pinned"), "pinned"),
    ],
)
def test_wrong_field_types_name_the_field(call: object, field: str) -> None:
    with pytest.raises(FsupError) as info:
        call()  # type: ignore[operator]
    assert info.value.code == "INVALID_REQUEST" and info.value.details["field"] == field
    assert field in info.value.message


async def test_json_body_refuses_a_declared_length_over_the_cap_before_reading() -> None:
    app = QuartTrio(__name__)
    async with app.test_request_context(
        "/x", method="POST", headers={"Content-Length": str(10 * MiB)}
    ):
        with pytest.raises(FsupError) as info:
            await json_body({"keyword"})
    assert info.value.code == "PAYLOAD_TOO_LARGE"


async def test_json_body_reports_deep_nesting_as_a_bad_request() -> None:
    app = QuartTrio(__name__)
    async with app.test_request_context("/x", method="POST", data=b"[" * 100_000):
        with pytest.raises(FsupError) as info:
            await json_body({"keyword"})
    assert info.value.code == "INVALID_REQUEST" and "deeper" in info.value.message


# --- numbers in query parameters, headers and cookies -------------------------------------

NOT_WHOLE_NUMBERS = [
    "²",
    "¹²",
    "\u0661\u0662",
    "\uff11",
    " 1",
    "1 ",
    "+1",
    "-1",
    "1_0",
    "0x10",
    "1e3",
    "1.0",
    "12\n",
    "9" * 20,
    "9" * 5000,
    "",
    "١",
    "𝟙",
]


@pytest.mark.parametrize("text", NOT_WHOLE_NUMBERS)
def test_only_ascii_digits_are_whole_numbers(text: str) -> None:
    assert whole_number(text) is None


@pytest.mark.parametrize("raw", [t for t in NOT_WHOLE_NUMBERS if t] + ["0", "501", "10" * 9])
def test_query_numbers_are_strict_and_name_the_parameter(raw: str) -> None:
    with pytest.raises(FsupError) as info:
        query_int({"limit": raw}, "limit", 50, 1, 500)
    assert info.value.code == "INVALID_REQUEST" and info.value.status == 400
    assert info.value.details == {"parameter": "limit"} and "'limit'" in info.value.message


def test_query_numbers_in_range_and_defaults() -> None:
    assert query_int({"limit": "500"}, "limit", 50, 1, 500) == 500
    assert query_int({"limit": "007"}, "limit", 50, 1, 500) == 7
    assert query_int({}, "limit", 50, 1, 500) == 50
    assert query_int({"limit": ""}, "limit", 50, 1, 500) == 50


@pytest.mark.parametrize(
    "cookie",
    [
        "²." + "0" * 64,
        "\u0661\u0662." + "0" * 64,
        "9" * 5000 + "." + "0" * 64,
        "123." + "A" * 64,
        "123." + "0" * 63,
        "123." + "0" * 64 + "\n",
        " 123." + "0" * 64,
        "123",
        ".",
        "123.",
        "-1." + "0" * 64,
        "1_0." + "0" * 64,
        "x" * 100_000,
    ],
)
def test_malformed_session_cookies_are_unauthorized(cookie: str) -> None:
    with pytest.raises(FsupError) as info:
        check_session(TOKEN, cookie, now=1000)
    assert info.value.code == "UNAUTHORIZED" and info.value.status == 401


def test_a_good_cookie_with_a_trailing_newline_is_refused() -> None:
    cookie, _ = new_session(TOKEN, now=1000)
    check_session(TOKEN, cookie, now=1000)
    with pytest.raises(FsupError):
        check_session(TOKEN, cookie + "\n", now=1000)


async def last_event_id(value: str) -> int | None:
    app = QuartTrio(__name__)
    async with app.test_request_context("/api/v1/events", headers={"Last-Event-ID": value}):
        return api_v1.last_event_id()


@pytest.mark.parametrize(
    "value",
    [t for t in NOT_WHOLE_NUMBERS if t and t.isascii() and t.isprintable()]
    + ["\u00b2", "1\u00b9"],  # latin-1 superscripts: what a header can carry
)
async def test_bad_last_event_ids_are_a_bad_request(value: str) -> None:
    with pytest.raises(FsupError) as info:
        await last_event_id(value)
    assert info.value.code == "INVALID_REQUEST" and "Last-Event-ID" in info.value.message


async def test_good_last_event_ids() -> None:
    assert await last_event_id("42") == 42
    assert await last_event_id("") is None


async def test_a_last_event_id_never_issued_starts_with_a_reset() -> None:
    bus = EventBus()
    for i in range(3):
        bus.publish("log", {"i": i})
    with bus.subscribe(after=10**18) as late:
        assert late.receive.receive_nowait().type == "reset"
    with bus.subscribe(after=3) as current:
        bus.publish("log", {"i": 3})
        assert current.receive.receive_nowait().id == 4

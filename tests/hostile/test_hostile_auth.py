"""Hostile authentication: every field of the HMAC signature tampered (key id, timestamp,
signature, method, path, query, body), the clock skewed both ways past 300 s, malformed
timestamps, empty and oversized headers; the `/api/v1` bearer token wrong or missing; the
`rm_session` cookie malformed; `Last-Event-ID` malformed.

The requests would change something if they got through (stop a formation, deploy one, create
a search), so the snapshot after each case would show a bypass even if the status lied.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hostile_bundles import valid_targz
from hostile_contract import assert_error
from hostile_kit import Target
from hostile_wire import request_bytes, rfc3339

from supervisor.http.api_auth import SESSION_TTL_S, new_session

pytestmark = pytest.mark.e2e

FLEET = ("alpha", "beta")
STOP = "/rpc/formations/alpha/stop"


@dataclass(frozen=True)
class Tamper:
    """A signed request, sent with one thing changed."""

    id: str
    method: str = "POST"
    target: str = STOP
    body: bytes = b""
    sign: dict[str, object] | None = None  # overrides for Signer.headers
    drop: tuple[str, ...] = ()  # auth headers left out
    extra: tuple[tuple[str, str], ...] = ()
    content_type: str | None = None


def _with_utf8(value: str) -> str:
    """Header values beyond Latin-1 go on the wire as UTF-8 bytes."""
    return value.encode().decode("latin-1")


def _now_arabic() -> str:
    """Now, in Arabic-Indic digits (as UTF-8 bytes on the wire, and signed as such)."""
    return _with_utf8(
        rfc3339().translate(
            str.maketrans(
                "0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"
            )
        )
    )


DEPLOY_A = valid_targz("ha-signed", "1.0.0")
DEPLOY_B = valid_targz("ha-swapped", "1.0.0")
KEY, STAMP, SIG = "X-MUXI-Key-ID", "X-MUXI-Timestamp", "X-MUXI-Signature"

TAMPERS: list[Tamper] = [
    # key id
    Tamper("key-id-missing", drop=(KEY,)),
    Tamper("key-id-empty", sign={"key_id": ""}),
    Tamper("key-id-wrong", sign={"key_id": "MUXI_LOCAL_00000000000000000000000000000000"}),
    Tamper("key-id-lowercase", sign={"key_id": "lower"}),
    Tamper("key-id-prefix", sign={"key_id": "prefix"}),
    Tamper("key-id-plus-char", sign={"key_id": "plus"}),
    Tamper("key-id-non-ascii", sign={"key_id": "MUXI_LOCAL_\u00e9\u00e9"}),
    Tamper("key-id-8kib", sign={"key_id": "K" * 8192}),
    # timestamp (signed correctly: only the time is wrong)
    Tamper("timestamp-missing", drop=(STAMP,)),
    Tamper("timestamp-empty", sign={"timestamp": ""}),
    Tamper("skew-plus-301s", sign={"timestamp": "skew:301"}),
    Tamper("skew-minus-301s", sign={"timestamp": "skew:-301"}),
    Tamper("skew-plus-10-years", sign={"timestamp": f"skew:{10 * 365 * 86400}"}),
    Tamper("timestamp-1970", sign={"timestamp": "1970-01-01T00:00:00Z"}),
    Tamper("timestamp-year-1-plus-14h", sign={"timestamp": "0001-01-01T00:00:00+14:00"}),
    Tamper("timestamp-year-9999-minus-14h", sign={"timestamp": "9999-12-31T23:59:59-14:00"}),
    Tamper("timestamp-word", sign={"timestamp": "yesterday"}),
    Tamper("timestamp-out-of-range-fields", sign={"timestamp": "2026-13-45T99:99:99Z"}),
    Tamper("timestamp-no-zone", sign={"timestamp": "now-no-zone"}),
    Tamper("timestamp-unix-seconds", sign={"timestamp": "unix"}),
    Tamper("timestamp-arabic-digits", sign={"timestamp": "arabic"}),
    Tamper("timestamp-nan", sign={"timestamp": "NaN"}),
    Tamper("timestamp-4kib", sign={"timestamp": "2026-01-01T00:00:00" + "0" * 4096 + "Z"}),
    # signature
    Tamper("signature-missing", drop=(SIG,)),
    Tamper("signature-empty", sign={"signature": ""}),
    Tamper("signature-one-char-changed", sign={"signature": "flip"}),
    Tamper("signature-lowercased", sign={"signature": "lower"}),
    Tamper("signature-no-padding", sign={"signature": "unpadded"}),
    Tamper("signature-hex", sign={"signature": "hex"}),
    Tamper("signature-not-base64", sign={"signature": "!!!!not-base64!!!!"}),
    Tamper("signature-4kib", sign={"signature": "A" * 4096}),
    Tamper("signature-with-the-bearer-token", sign={"signature": "token"}),
    # the signed request itself
    Tamper("method-signed-get-sent-post", sign={"sign_method": "GET"}),
    Tamper("path-signed-beta-sent-alpha", sign={"sign_target": "/rpc/formations/beta/stop"}),
    Tamper(
        "path-sent-percent-encoded",
        target="/rpc/formations/%61lpha/stop",
        sign={"sign_target": STOP},
    ),
    Tamper("path-signed-percent-encoded", sign={"sign_target": "/rpc/formations/%61lpha/stop"}),
    Tamper("path-signed-with-trailing-slash", sign={"sign_target": STOP + "/"}),
    Tamper("query-changed", target=STOP + "?force=2", sign={"sign_target": STOP + "?force=1"}),
    Tamper("query-added", target=STOP + "?x=1", sign={"sign_target": STOP}),
    Tamper("query-removed", sign={"sign_target": STOP + "?x=1"}),
    Tamper("query-reordered", target=STOP + "?b=2&a=1", sign={"sign_target": STOP + "?a=1&b=2"}),
    Tamper("body-added", body=b"{}", sign={"sign_body": b""}),
    Tamper(
        "body-swapped-bundle",
        target="/rpc/formations/deploy",
        body=DEPLOY_B,
        sign={"sign_body": DEPLOY_A},
        content_type="application/gzip",
    ),
    Tamper(
        "body-one-byte-appended",
        target="/rpc/formations/deploy",
        body=DEPLOY_A + b"\0",
        sign={"sign_body": DEPLOY_A},
        content_type="application/gzip",
    ),
    # the MUXI-HMAC Authorization scheme, malformed
    Tamper(
        "muxi-hmac-bare-scheme", drop=(KEY, STAMP, SIG), extra=(("Authorization", "MUXI-HMAC"),)
    ),
    Tamper(
        "muxi-hmac-timestamp-word",
        drop=(KEY, STAMP, SIG),
        extra=(("Authorization", "MUXI-HMAC key={key}, timestamp=abc, signature=AAAA"),),
    ),
    Tamper(
        "muxi-hmac-timestamp-arabic",
        drop=(KEY, STAMP, SIG),
        extra=(
            (
                "Authorization",
                _with_utf8("MUXI-HMAC key={key}, timestamp=\u0661\u0662, signature=AAAA"),
            ),
        ),
    ),
    Tamper(
        "muxi-hmac-timestamp-400-digits",
        drop=(KEY, STAMP, SIG),
        extra=(
            ("Authorization", "MUXI-HMAC key={key}, timestamp=" + "9" * 400 + ", signature=AAAA"),
        ),
    ),
    Tamper(
        "muxi-hmac-skew-plus-301s", drop=(KEY, STAMP, SIG), extra=(("Authorization", "muxi:+301"),)
    ),
    Tamper(
        "muxi-hmac-skew-minus-301s", drop=(KEY, STAMP, SIG), extra=(("Authorization", "muxi:-301"),)
    ),
    Tamper(
        "muxi-hmac-signed-get-sent-post",
        drop=(KEY, STAMP, SIG),
        extra=(("Authorization", "muxi:GET"),),
    ),
    Tamper("muxi-hmac-wrong-key", drop=(KEY, STAMP, SIG), extra=(("Authorization", "muxi:key"),)),
]


def _muxi_hmac(target: Target, spec: str, path: str) -> str:
    """The MUXI SDK's scheme, signed right except for what `spec` (muxi:<change>) names."""
    change = spec.removeprefix("muxi:")
    stamp = int(time.time()) + (int(change) if change[0] in "+-" else 0)
    method = "GET" if change == "GET" else "POST"
    key_id = "MUXI_LOCAL_wrong" if change == "key" else target.signer.key_id
    mac = hmac.new(
        target.signer.secret_key.encode(), f"{stamp};{method};{path}".encode(), hashlib.sha256
    ).digest()
    return f"MUXI-HMAC key={key_id}, timestamp={stamp}, signature={base64.b64encode(mac).decode()}"


def _resolve(target: Target, case: Tamper) -> dict[str, object]:
    """Turn the table's symbolic overrides into values for this server's keys."""
    sign = dict(case.sign or {})
    key = target.signer.key_id
    symbolic_keys = {"lower": key.lower(), "prefix": key[:-1], "plus": key + "x"}
    if sign.get("key_id") in symbolic_keys:
        sign["key_id"] = symbolic_keys[str(sign["key_id"])]
    stamp = sign.get("timestamp")
    if isinstance(stamp, str) and stamp.startswith("skew:"):  # taken now, not at collection
        sign["timestamp"] = rfc3339(float(stamp.removeprefix("skew:")))
    elif stamp == "now-no-zone":
        sign["timestamp"] = rfc3339().removesuffix("Z")
    elif stamp == "unix":
        sign["timestamp"] = str(int(time.time()))
    elif stamp == "arabic":
        sign["timestamp"] = _now_arabic()
    if "signature" in sign and sign["signature"] in ("flip", "lower", "unpadded", "hex", "token"):
        good = target.signer.headers(case.method, case.target, case.body)[2][1]
        raw = base64.b64decode(good)
        sign["signature"] = {
            "flip": ("B" if good[0] != "B" else "C") + good[1:],
            "lower": good.lower() if good.lower() != good else good.upper(),
            "unpadded": good.rstrip("="),
            "hex": raw.hex(),
            "token": target.token,
        }[str(sign["signature"])]
    return sign


@pytest.mark.parametrize("case", TAMPERS, ids=lambda c: c.id)
def test_tampered_signature_is_refused(target: Target, case: Tamper) -> None:
    sign = _resolve(target, case)
    auth = target.signer.headers(case.method, case.target, case.body, **sign)  # type: ignore[arg-type]
    headers = [(n, v) for n, v in auth if n not in case.drop]
    for name, value in case.extra:
        if value.startswith("muxi:"):
            value = _muxi_hmac(target, value, case.target.split("?")[0])
        headers.append((name, value.replace("{key}", target.signer.key_id)))
    if case.content_type:
        headers.append(("Content-Type", case.content_type))
    data = request_bytes(case.method, case.target, headers, case.body, host=target.host_header)
    reply = target.send(data)
    assert_error(reply, 401, "UNAUTHORIZED")


BEARERS: list[tuple[str, Callable[[str], str | None]]] = [
    ("missing", lambda token: None),
    ("empty-scheme-only", lambda token: "Bearer"),
    ("empty-token", lambda token: "Bearer "),
    ("wrong-token", lambda token: "Bearer " + "0" * 64),
    ("uppercased-token", lambda token: "Bearer " + token.upper()),
    ("token-minus-one-char", lambda token: "Bearer " + token[:-1]),
    ("token-plus-one-char", lambda token: "Bearer " + token + "0"),
    ("basic-scheme", lambda token: "Basic " + base64.b64encode(f"x:{token}".encode()).decode()),
    ("token-without-scheme", lambda token: token),
    ("non-ascii-token", lambda token: _with_utf8("Bearer \u0663" + token[1:])),
    ("8kib-token", lambda token: "Bearer " + "t" * 8192),
    ("session-cookie-as-bearer", lambda token: "Bearer " + new_session(token)[0]),
]


@pytest.mark.parametrize("make", [pytest.param(m, id=i) for i, m in BEARERS])
def test_bad_bearer_token_is_refused(target: Target, make: Callable[[str], str | None]) -> None:
    """A search would be created if the token were accepted."""
    value = make(target.token)
    headers = [("Content-Type", "application/json")]
    if value is not None:
        headers.append(("Authorization", value))
    body = b'{"keyword": "bearer bypass", "autostart": false}'
    reply = target.send(
        request_bytes("POST", "/api/v1/searches", headers, body, host=target.host_header)
    )
    assert_error(reply, 401, "UNAUTHORIZED")


COOKIES: list[tuple[str, Callable[[str], str | None]]] = [
    ("missing", lambda token: None),
    ("empty", lambda token: ""),
    ("word", lambda token: "abc"),
    ("superscript-digits", lambda token: _with_utf8("\u00b2\u00b2\u00b2\u00b2.") + "0" * 64),
    ("arabic-digits", lambda token: _with_utf8("\u0663\u0663\u0663.") + "0" * 64),
    ("5000-digits", lambda token: "9" * 5000 + "." + "0" * 64),
    ("negative", lambda token: "-1." + "0" * 64),
    ("no-signature", lambda token: "9999999999."),
    (
        "signature-of-another-expiry",
        lambda token: "9999999999." + new_session(token)[0].split(".", 1)[1],
    ),
    ("expired-but-signed", lambda token: new_session(token, time.time() - 2 * SESSION_TTL_S)[0]),
    ("bearer-token-as-cookie", lambda token: token),
    ("8kib", lambda token: "1" * 8192),
]


@pytest.mark.parametrize("make", [pytest.param(m, id=i) for i, m in COOKIES])
def test_bad_session_cookie_is_refused(target: Target, make: Callable[[str], str | None]) -> None:
    value = make(target.token)
    headers = [("Accept", "text/event-stream")]
    if value is not None:
        headers.append(("Cookie", f"rm_session={value}"))
    reply = target.send(request_bytes("GET", "/api/v1/events", headers, host=target.host_header))
    assert_error(reply, 401, "UNAUTHORIZED")


def test_bearer_token_does_not_open_the_event_stream(target: Target) -> None:
    """The stream takes only the cookie."""
    headers = [("Authorization", f"Bearer {target.token}"), ("Accept", "text/event-stream")]
    reply = target.send(request_bytes("GET", "/api/v1/events", headers, host=target.host_header))
    assert_error(reply, 401, "UNAUTHORIZED")


LAST_EVENT_IDS = [
    ("word", "abc"),
    ("negative", "-1"),
    ("superscript", _with_utf8("\u00b2")),
    ("arabic-digit", _with_utf8("\u0663")),
    ("fullwidth-digits", _with_utf8("\uff11\uff12")),
    ("5000-digits", "9" * 5000),
    ("exponent", "1e3"),
    ("hex", "0x10"),
    ("fraction", "1.5"),
    ("underscore", "1_0"),
    ("8kib", "1" * 8192),
]


def session_cookie(target: Target) -> str:
    """A real session cookie, from POST /api/v1/session."""
    response = target.http.post(
        "/api/v1/session", headers={"Authorization": f"Bearer {target.token}"}
    )
    response.raise_for_status()
    return response.cookies["rm_session"]


@pytest.mark.parametrize("value", [pytest.param(v, id=i) for i, v in LAST_EVENT_IDS])
def test_bad_last_event_id_is_refused(target: Target, value: str) -> None:
    """With a good cookie, so that only the resume point is at fault."""
    cookie = session_cookie(target)
    headers = [
        ("Cookie", f"rm_session={cookie}"),
        ("Accept", "text/event-stream"),
        ("Last-Event-ID", value),
    ]
    reply = target.send(request_bytes("GET", "/api/v1/events", headers, host=target.host_header))
    assert_error(reply, 400, "INVALID_REQUEST")

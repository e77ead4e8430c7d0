"""Hostile JSON bodies to `/api/v1/searches` (create, patch, start), with a good bearer token
so that only the body is at fault: deep nesting, wrong types, huge bodies, not JSON, NaN.
Each must be a 400 (413 for size) in the contract's shape, with no search created or changed.
"""

from __future__ import annotations

import pytest
from hostile_contract import BOUND_S, assert_error
from hostile_kit import Target

pytestmark = pytest.mark.e2e

FLEET = ("alpha",)
# Deep enough to overflow any recursive parser, small enough (under 256 KiB) to be read.
DEEP = 100_000


def deep_array(depth: int = DEEP) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_object(depth: int = DEEP // 5) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


BAD_BODIES: list[tuple[str, bytes]] = [
    ("deep-array", deep_array()),
    ("deep-object", deep_object()),
    ("deep-array-in-keyword", b'{"keyword": ' + deep_array() + b"}"),
    ("deep-object-in-mode", b'{"keyword": "x", "mode": ' + deep_object() + b"}"),
    ("keyword-integer", b'{"keyword": 42}'),
    ("keyword-list", b'{"keyword": ["a", "b"]}'),
    ("keyword-null", b'{"keyword": null}'),
    ("keyword-empty", b'{"keyword": ""}'),
    ("keyword-whitespace", b'{"keyword": " \\t\\n "}'),
    ("keyword-201-chars", b'{"keyword": "' + b"k" * 201 + b'"}'),
    ("keyword-lone-surrogate", b'{"keyword": "bad \\ud800 half"}'),
    ("keyword-invalid-utf8", b'{"keyword": "\xff\xfe\xfa"}'),
    ("autostart-string", b'{"keyword": "x", "autostart": "yes"}'),
    ("autostart-number", b'{"keyword": "x", "autostart": 1}'),
    ("autostart-nan", b'{"keyword": "x", "autostart": NaN}'),
    ("autostart-5000-digits", b'{"keyword": "x", "autostart": 1' + b"0" * 5000 + b"}"),
    ("mode-unknown", b'{"keyword": "x", "mode": "fast"}'),
    ("mode-infinity", b'{"keyword": "x", "mode": Infinity}'),
    ("keyword-nan", b'{"keyword": NaN}'),
    ("unknown-field", b'{"keyword": "x", "state": "complete"}'),
    ("body-array", b'["keyword", "x"]'),
    ("body-string", b'"keyword"'),
    ("body-number", b"42"),
    ("body-null", b"null"),
    ("body-true", b"true"),
    ("form-encoded", b"keyword=x&autostart=true"),
    ("single-quotes", b"{'keyword': 'x'}"),
    ("truncated", b'{"keyword": "x"'),
    ("trailing-garbage", b'{"keyword": "x"} {"keyword": "y"}'),
    ("empty-body", b""),
    ("whitespace-body", b" \r\n\t "),
    ("nul-bytes", b'\x00{"keyword": "x"}'),
]


@pytest.mark.parametrize("body", [pytest.param(b, id=i) for i, b in BAD_BODIES])
def test_create_search_with_a_hostile_body(target: Target, body: bytes) -> None:
    reply = target.request(
        "POST", "/api/v1/searches", [("Content-Type", "application/json")], body, auth="bearer"
    )
    assert_error(reply, 400, "INVALID_REQUEST")


@pytest.mark.parametrize(
    "size_mib",
    [pytest.param(5, id="keyword-5mib"), pytest.param(60, id="keyword-60mib")],
)
def test_create_search_with_a_huge_body(target: Target, size_mib: int) -> None:
    """A keyword far over its 200-character limit, in a body well under the upload limit."""
    body = b'{"keyword": "' + b"h" * (size_mib * 1024 * 1024) + b'"}'
    reply = target.request(
        "POST", "/api/v1/searches", [("Content-Type", "application/json")], body, auth="bearer"
    )
    assert_error(reply, (400, 413), ("INVALID_REQUEST", "PAYLOAD_TOO_LARGE"), within=2 * BOUND_S)


PATCH_BODIES: list[tuple[str, bytes]] = [
    ("deep-array", deep_array()),
    ("deep-object", deep_object()),
    ("pinned-string", b'{"pinned": "yes"}'),
    ("pinned-nan", b'{"pinned": NaN}'),
    ("keyword-integer", b'{"keyword": 7}'),
    ("keyword-empty", b'{"keyword": ""}'),
    ("keyword-201-chars", b'{"keyword": "' + b"k" * 201 + b'"}'),
    ("keyword-lone-surrogate", b'{"keyword": "\\udfff"}'),
    ("unknown-field-state", b'{"state": "running"}'),
    ("unknown-field-id", b'{"id": "other"}'),
    ("body-array", b'[{"pinned": true}]'),
    ("not-json", b"pinned=true"),
]


@pytest.mark.parametrize("body", [pytest.param(b, id=i) for i, b in PATCH_BODIES])
def test_patch_search_with_a_hostile_body(target: Target, body: bytes) -> None:
    reply = target.request(
        "PATCH",
        f"/api/v1/searches/{target.baseline_search}",
        [("Content-Type", "application/json")],
        body,
        auth="bearer",
    )
    assert_error(reply, 400, "INVALID_REQUEST")


ACTION_BODIES: list[tuple[str, str, bytes]] = [
    ("start-mode-unknown", "start", b'{"mode": "fast"}'),
    ("start-mode-list", "start", b'{"mode": ["live"]}'),
    ("start-deep-array", "start", deep_array()),
    ("start-unknown-field", "start", b'{"keyword": "other"}'),
    ("start-not-json", "start", b"mode=live"),
    ("rerun-mode-nan", "rerun", b'{"mode": NaN}'),
    ("rerun-deep-object", "rerun", deep_object()),
    ("stop-unknown-field", "stop", b'{"force": true}'),
]


@pytest.mark.parametrize(
    ("action", "body"), [pytest.param(a, b, id=i) for i, a, b in ACTION_BODIES]
)
def test_search_action_with_a_hostile_body(target: Target, action: str, body: bytes) -> None:
    """The body is checked before the action runs: the finished search is not run again."""
    reply = target.request(
        "POST",
        f"/api/v1/searches/{target.baseline_search}/{action}",
        [("Content-Type", "application/json")],
        body,
        auth="bearer",
    )
    assert_error(reply, 400, "INVALID_REQUEST")

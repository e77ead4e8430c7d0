"""Hostile bundles posted to `POST /rpc/formations/deploy` and `PUT /rpc/formations/{id}`,
signed, so that only the bundle is at fault: each must be a 400 (413 for a limit) in the
contract's shape, within a bound, with nothing deployed, written or started."""

from __future__ import annotations

import itertools

import pytest
from hostile_archive_cases import ARCHIVE_CASES, ArchiveCase
from hostile_bundles import valid_targz
from hostile_contract import BOUND_S, assert_error
from hostile_kit import Target

pytestmark = pytest.mark.e2e

FLEET = ("alpha",)
_versions = itertools.count(2)


def _send_bundle(target: Target, route: str, body: bytes, content_type: str) -> object:
    if route == "deploy":
        method, path = "POST", "/rpc/formations/deploy"
    else:
        method, path = "PUT", "/rpc/formations/alpha"
    return target.request(
        method, path, [("Content-Type", content_type)], body, auth="signed", timeout=60
    )


CASES = [
    pytest.param(case, route, id=f"{route}-{case.id}")
    for case in ARCHIVE_CASES
    for route in ("deploy", "update")
    if route == "deploy" or case.update
]


@pytest.mark.parametrize(("case", "route"), CASES)
def test_hostile_bundle_is_refused(target: Target, case: ArchiveCase, route: str) -> None:
    """The bundle is refused before anything is extracted for good or started."""
    version = f"{next(_versions)}.0.0"
    formation_id = "alpha" if route == "update" else f"hx-{case.id}"[:50].rstrip("-")
    body = case.build(formation_id, version)
    reply = _send_bundle(target, route, body, case.content_type)
    assert_error(reply, case.statuses, case.codes, within=case.bound_s or BOUND_S)


SEMANTIC = [
    # (id, route, manifest id, version, expected status, expected code)
    ("update-with-another-formations-id", "update", "beta", "50.0.0", 400, "INVALID_FORMATION"),
    ("update-to-a-lower-version", "update", "alpha", "0.0.1", 409, "VERSION_NOT_HIGHER"),
    ("update-to-the-same-version", "update", "alpha", "1.0.0", 409, "VERSION_NOT_HIGHER"),
    ("deploy-an-existing-id", "deploy", "alpha", "60.0.0", 409, "FORMATION_ALREADY_EXISTS"),
]


@pytest.mark.parametrize(
    ("route", "manifest_id", "version", "status", "code"),
    [pytest.param(*row[1:], id=row[0]) for row in SEMANTIC],
)
def test_valid_bundle_for_the_wrong_target(
    target: Target, route: str, manifest_id: str, version: str, status: int, code: str
) -> None:
    """A well-formed bundle that does not fit the request: refused, nothing replaced."""
    reply = _send_bundle(target, route, valid_targz(manifest_id, version), "application/gzip")
    assert_error(reply, status, code)


def test_update_of_a_missing_formation(target: Target) -> None:
    """PUT to an id that does not exist: 404, even with a bundle that would deploy."""
    body = valid_targz("ghost", "2.0.0")
    reply = target.request(
        "PUT", "/rpc/formations/ghost", [("Content-Type", "application/gzip")], body, auth="signed"
    )
    assert_error(reply, 404, "FORMATION_NOT_FOUND")

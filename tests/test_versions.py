"""Formation versions: SemVer 2.0.0 validity and precedence, and the choices built on them
(update check, rollback target, pruning, listing order)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from supervisor.core.errors import FsupError
from supervisor.core.manifest import parse_manifest
from supervisor.core.version_order import (
    InvalidVersion,
    Precedence,
    compare,
    is_higher,
    ordered,
    parse,
    problem,
)
from supervisor.storage import versions
from supervisor.storage.store import Store, VersionRow

# The specification's own example (section 11), lowest first.
SPEC_CHAIN = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
]


@pytest.mark.parametrize(("lower", "higher"), list(itertools.combinations(SPEC_CHAIN, 2)))
def test_the_specifications_example_chain(lower: str, higher: str) -> None:
    assert compare(lower, higher) < 0 and compare(higher, lower) > 0
    assert is_higher(higher, lower) and not is_higher(lower, higher)
    assert Precedence(lower) < Precedence(higher)


def test_the_chain_sorts_back_from_any_order() -> None:
    shuffled = SPEC_CHAIN[:]
    random.Random(10).shuffle(shuffled)
    assert ordered(shuffled) == SPEC_CHAIN


@pytest.mark.parametrize(
    ("a", "b", "sign"),
    [
        ("1.0.0", "2.0.0", -1),
        ("2.0.0", "2.1.0", -1),
        ("2.1.0", "2.1.1", -1),
        ("1.9.0", "1.10.0", -1),  # numerically, not as text
        ("1.0.10", "1.0.9", 1),
        ("1.0.0-rc.1", "1.0.0", -1),  # a pre-release is lower than its release
        ("1.0.0-1", "1.0.0", -1),  # PEP 440 would call this a post-release, above 1.0.0
        ("0.9.9", "1.0.0-alpha", -1),  # but higher than the release before
        ("1.0.0-alpha", "1.0.0-alpha.0", -1),  # a prefix is lower
        ("1.0.0-2", "1.0.0-10", -1),  # numeric identifiers numerically
        ("1.0.0-999", "1.0.0-a", -1),  # numeric below alphanumeric
        ("1.0.0-Z", "1.0.0-a", -1),  # alphanumeric in ASCII order
        ("1.0.0-alpha-2", "1.0.0-alpha-10", 1),  # `alpha-2` is one alphanumeric identifier
        ("1.0.0-rc.1+build.5", "1.0.0-rc.1", 0),  # build metadata is ignored
        ("1.0.0+b1", "1.0.0+b2", 0),
        ("1.0.0+b2", "1.0.0+b1", 0),
        ("1.0.0+20130313144700", "1.0.0", 0),
        ("1.0.0+exp.sha.5114f85", "1.0.0+21AF26D3----117B344092BD", 0),
        ("999999999999999999.0.0", "1.0.0", 1),
    ],
)
def test_precedence(a: str, b: str, sign: int) -> None:
    result = compare(a, b)
    assert (result > 0) - (result < 0) == sign
    assert is_higher(a, b) is (sign > 0)
    assert (Precedence(a) == Precedence(b)) is (sign == 0)
    if sign == 0:
        assert hash(Precedence(a)) == hash(Precedence(b))


@pytest.mark.parametrize(
    "version",
    [
        "0.0.0",
        "1.0.0-alpha.beta",
        "1.0.0-0.3.7",
        "1.0.0-x.7.z.92",
        "1.0.0-x-y-z.--",
        "1.0.0-alpha+001",
        "1.0.0+20130313144700",
        "1.0.0-beta+exp.sha.5114f85",
        "1.0.0+21AF26D3----117B344092BD",
        "1.0.0+0001",
        "1.0.0-0a",
    ],
)
def test_valid_versions(version: str) -> None:
    assert problem(version) is None
    assert str(parse(version)) == version
    assert parse_manifest(manifest(version)).version == version


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("01.0.0", "leading zero"),
        ("1.01.0", "leading zero"),
        ("1.0.00", "leading zero"),
        ("1.0.0-01", "leading zero"),
        ("1.0.0-rc.01", "leading zero"),
        ("1.0", "three numbers"),
        ("1", "three numbers"),
        ("1.2.3.4", "three numbers"),
        ("v1.0.0", "three numbers"),
        ("1.0.0-", "pre-release identifier"),
        ("1.0.0-rc..1", "pre-release identifier"),
        ("1.0.0-rc.", "pre-release identifier"),
        ("1.0.0+", "build identifier"),
        ("1.0.0+b.", "build identifier"),
        ("1.0.0+a+b", "more than one"),
        ("1.0.0\n", "ASCII"),
        (" 1.0.0", "ASCII"),
        ("1.0.0-r\u00e9", "ASCII"),
        ("\u0661.0.0", "ASCII"),  # Arabic-Indic one
        ("1.\uff10.0", "ASCII"),  # fullwidth zero
        ("1.0.0-\u0663", "ASCII"),
        ("", "three numbers"),
        ("1" * 19 + ".0.0", "18 digits"),
        ("1.0.0-" + "a" * 200, "longer than 128"),
    ],
)
def test_invalid_versions_are_refused_with_the_reason(version: str, why: str) -> None:
    reason = problem(version)
    assert reason is not None and why in reason
    with pytest.raises(InvalidVersion, match=why):
        parse(version)
    with pytest.raises(InvalidVersion):
        compare(version, "1.0.0")
    with pytest.raises(FsupError) as info:
        parse_manifest(manifest(version))
    error = info.value
    assert (error.code, error.status, error.details) == (
        "INVALID_FORMATION",
        400,
        {"field": "version"},
    )
    assert error.message.startswith("formation.yaml: version: must be a SemVer 2.0.0 version")
    assert why in error.message


def manifest(version: str) -> bytes:
    quoted = version.encode("unicode_escape").decode().replace('"', '\\"')
    return f'id: hello\nversion: "{quoted}"\ncommand: [python3, app.py]\n'.encode()


@pytest.mark.parametrize(
    ("current", "candidate", "allowed"),
    [
        ("1.0.0", "1.0.1", True),
        ("1.0.0-rc.1", "1.0.0", True),
        ("1.0.0-beta.2", "1.0.0-beta.11", True),
        ("1.0.0", "1.0.0-rc.1", False),
        ("1.0.0", "1.0.0", False),
        ("1.0.0+b1", "1.0.0+b2", False),  # equal precedence: VERSION_NOT_HIGHER
        ("1.0.0+b2", "1.0.0+b1", False),
        ("1.0.0", "1.0.0+b1", False),
    ],
)
def test_the_update_check(current: str, candidate: str, allowed: bool) -> None:
    """What actors/formation.py compares: `spec.parsed_version <= current.parsed_version` is
    VERSION_NOT_HIGHER."""
    old, new = parse_manifest(manifest(current)), parse_manifest(manifest(candidate))
    assert (not new.parsed_version <= old.parsed_version) is allowed


@pytest.mark.parametrize(
    ("stored", "current", "target"),
    [
        (["1.0.0", "2.0.0"], "2.0.0", "1.0.0"),
        (["2.0.0", "1.0.0"], "2.0.0", "1.0.0"),
        (["1.0.0"], "1.0.0", None),
        (["1.0.0-rc.1", "1.0.0", "1.0.0-beta.11"], "1.0.0", "1.0.0-rc.1"),
        (["1.0.0-beta.2", "1.0.0-beta.11", "2.0.0"], "1.0.0-beta.11", "1.0.0-beta.2"),
        (["1.10.0", "1.9.0", "1.2.0"], "1.10.0", "1.9.0"),
        (["1.0.0+b1", "1.0.0+b2"], "1.0.0+b2", None),  # another build is not below
        (["0.9.0", "1.0.0+b1", "1.0.0+b2"], "1.0.0+b2", "0.9.0"),
        (["0.9.0+x", "0.9.0+y", "1.0.0"], "1.0.0", "0.9.0+y"),  # equal: the newest stored
        (["1.0.0-rc.01", "1.0.0"], "1.0.0", None),  # not a version (an older fsup's): skipped
    ],
)
def test_rollback_target(stored: list[str], current: str, target: str | None) -> None:
    assert versions.previous(stored, current) == target


@pytest.mark.parametrize(
    ("stored", "current", "pruned"),
    [
        (["1.0.0", "1.1.0", "1.2.0", "1.3.0"], "1.3.0", ["1.0.0"]),
        (["1.0.0-rc.1", "1.0.0", "1.1.0-alpha", "1.1.0"], "1.1.0", ["1.0.0-rc.1"]),
        (["1.9.0", "1.10.0", "1.2.0", "1.11.0"], "1.11.0", ["1.2.0"]),
        (["0.9.0", "1.0.0+b1", "1.0.0+b2"], "1.0.0+b2", ["1.0.0+b1"]),  # the other build goes
        (["1.0.0-rc.01", "1.0.0", "2.0.0"], "2.0.0", ["1.0.0-rc.01"]),
        (["2.0.0", "1.0.0"], "1.0.0", ["2.0.0"]),
    ],
)
def test_what_an_update_prunes(stored: list[str], current: str, pruned: list[str]) -> None:
    assert versions.to_prune(stored, current) == pruned


def test_listings_are_in_precedence_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    try:
        stamp = "2024-01-01T00:00:00Z"
        store.insert_formation("hello", 8000, VersionRow("hello", "1.0.0", b"", "/x", stamp))
        for version in [
            "1.0.0-rc.1",
            "1.0.0-beta.11",
            "1.0.0-rc.01",
            "1.0.0-beta.2",
            "0.9.0+b2",
            "0.9.0+b1",
        ]:
            store.put_version(VersionRow("hello", version, b"", "/x", stamp))
        assert [row.version for row in store.versions("hello")] == [
            "1.0.0-rc.01",
            "0.9.0+b2",
            "0.9.0+b1",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ]
    finally:
        store.close()

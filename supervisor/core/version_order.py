"""Formation versions: which strings are SemVer 2.0.0 versions, and how they order. Pure functions.

Every comparison of two versions in fsup goes through `compare`: the update's
VERSION_NOT_HIGHER check (`FormationSpec.parsed_version`, `is_higher`), the rollback target
and what an update prunes (`supervisor.storage.versions`), and the order versions are listed in
(`ordered`, used by the store). Precedence is SemVer's (section 11 of the specification):
MAJOR.MINOR.PATCH numerically; a pre-release is lower than its release; pre-release
identifiers compare left to right, numeric ones numerically and below alphanumeric ones
(compared in ASCII order), and a shorter list is lower when it is a prefix of the longer one;
build metadata is ignored. So `1.0.0+b1` and `1.0.0+b2` are equal, and neither is higher
than the other (docs/decisions.md, "Edges").

The `semver` package does the comparing. It only ever sees strings that `PATTERN` matches in
full: the specification's own regular expression, written with `[0-9]` (Python's `\\d` also
matches other scripts' digits) and with MAJOR, MINOR and PATCH capped at 18 digits.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import semver

MAX_LENGTH = 128
_NUMBER = r"(?:0|[1-9][0-9]{0,17})"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"
# Matched with fullmatch only (`$` would let a trailing newline through).
PATTERN = re.compile(
    rf"{_NUMBER}\.{_NUMBER}\.{_NUMBER}"
    rf"(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?(?:\+{_BUILD_ID}(?:\.{_BUILD_ID})*)?"
)
_CHARACTERS = re.compile(r"[0-9A-Za-z.+-]*")
_DIGITS = re.compile(r"[0-9]+")


class InvalidVersion(ValueError):
    """Not a SemVer 2.0.0 version; the message says what is wrong with it."""


def problem(text: str) -> str | None:
    """What makes `text` not a SemVer 2.0.0 version, or None when it is one."""
    if len(text) > MAX_LENGTH:
        return f"it is longer than {MAX_LENGTH} characters"
    if PATTERN.fullmatch(text):
        return None
    if not _CHARACTERS.fullmatch(text):
        return (
            "it may hold only ASCII letters and digits, '.', '-' and '+' (no spaces or line breaks)"
        )
    head, plus, build = text.partition("+")
    if plus and "" in build.split("."):
        return "a build identifier (after '+' or a '.') is empty"
    if "+" in build:
        return "it has more than one '+'"
    core, dash, pre = head.partition("-")
    if dash and "" in pre.split("."):
        return "a pre-release identifier (after '-' or a '.') is empty"
    parts = core.split(".")
    if len(parts) != 3 or not all(_DIGITS.fullmatch(part) for part in parts):
        return "it must start with exactly three numbers, MAJOR.MINOR.PATCH"
    for identifier in parts + (pre.split(".") if dash else []):
        if _DIGITS.fullmatch(identifier) and len(identifier) > 1 and identifier[0] == "0":
            return f"the number {identifier} has a leading zero"
    if any(len(part) > 18 for part in parts):
        return "MAJOR, MINOR and PATCH are at most 18 digits each"
    return "it is not a SemVer 2.0.0 version"


def parse(text: str) -> semver.Version:
    """`text` as a `semver.Version`; InvalidVersion (saying why) when it is not one."""
    reason = problem(text)
    if reason is not None:
        raise InvalidVersion(reason)
    return semver.Version.parse(text)


def compare(a: str, b: str) -> int:
    """The one comparison of two versions: negative when `a` is lower than `b` by SemVer
    precedence, zero when they are equal (build metadata is ignored), positive when higher.
    Raises InvalidVersion when either is not a version."""
    return parse(a).compare(parse(b))


def is_higher(candidate: str, current: str) -> bool:
    return compare(candidate, current) > 0


@functools.total_ordering
class Precedence:
    """A version that compares (and sorts, and hashes) by `compare`."""

    __slots__ = ("version",)

    def __init__(self, version: str) -> None:
        parse(version)  # an invalid one fails here, not in the middle of a sort
        self.version = version

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Precedence):
            return NotImplemented
        return compare(self.version, other.version) == 0

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Precedence):
            return NotImplemented
        return compare(self.version, other.version) < 0

    def __hash__(self) -> int:
        parsed = parse(self.version)
        return hash((parsed.major, parsed.minor, parsed.patch, parsed.prerelease))

    def __repr__(self) -> str:
        return f"Precedence({self.version!r})"


def ordered(versions: Iterable[str]) -> list[str]:
    """Lowest first. Versions equal in precedence keep their given order. Strings that are not
    versions (stored by an older fsup that allowed them) come first, in their given order, so
    a listing never fails and they are the first to be pruned."""
    given = list(versions)
    unreadable = [v for v in given if problem(v) is not None]
    readable = [v for v in given if problem(v) is None]
    return unreadable + sorted(readable, key=Precedence)


def below(versions: Iterable[str], current: str) -> list[str]:
    """The versions lower in precedence than `current`, lowest first. Strings that are not
    versions are not below anything."""
    return [v for v in ordered(versions) if problem(v) is None and compare(v, current) < 0]

"""The kinds of value a setting of config.yaml can hold: how each is read from YAML (checked,
with a message that says what is wrong without saying where: the caller adds the setting's
path), written back, and described in the comment beside it. The model that uses them is
`config.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from supervisor.core.hmac_auth import SCHEMES
from supervisor.core.hosts import HostError, normalize_name
from supervisor.core.manifest import label

# Byte and count limits: no meaningful upper bound, so the largest integer a JSON number holds
# exactly (settings may be shown over the API).
BIG = 2**53 - 1


class Invalid(Exception):
    """A value is wrong; the message says how, without saying where."""


def shown_value(value: Any) -> str:
    """What a wrong value is, for a message: its YAML type and a bounded rendering."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({label(value)})"
    if isinstance(value, float):
        return f"a number ({label(value)})"
    if isinstance(value, str):
        return f"a string ({label(value)!r})" if value else "an empty string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def expected(what: str, value: Any) -> Invalid:
    return Invalid(f"expected {what}, got {shown_value(value)}")


class Kind(Protocol):
    def read(self, value: Any) -> Any:
        """The setting's value from YAML, checked; `Invalid` when wrong."""

    def write(self, value: Any) -> Any:
        """The setting's value as YAML writes it."""

    def describe(self) -> str:
        """Type and range, for the comment beside the setting."""


@dataclass(frozen=True)
class Integer:
    low: int
    high: int

    def read(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise expected("an integer", value)
        if not self.low <= value <= self.high:
            raise Invalid(f"must be between {self.low} and {self.high}, got {label(value)}")
        return value

    def write(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        if self.high == BIG:
            return f"integer >= {self.low}"
        return f"integer, {self.low} to {self.high}"


@dataclass(frozen=True)
class Number:
    low: float
    high: float

    def read(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise expected("a number", value)
        if not self.low <= value <= self.high:  # NaN fails this too
            raise Invalid(
                f"must be between {_num(self.low)} and {_num(self.high)}, got {label(value)}"
            )
        return float(value)

    def write(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return f"number, {_num(self.low)} to {_num(self.high)}"


def _num(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else str(bound)


_HOST = re.compile(r"[A-Za-z0-9._:%\[\]-]{1,253}")


@dataclass(frozen=True)
class Host:
    def read(self, value: Any) -> str:
        if not isinstance(value, str):
            raise expected("a string (an IP address or host name)", value)
        if not _HOST.fullmatch(value):
            raise Invalid(f"{label(value)!r} is not an IP address or host name")
        return value

    def write(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "IP address or host name"


@dataclass(frozen=True)
class Boolean:
    """true or false, as YAML writes them (not 1, "yes" or "on": a boolean only)."""

    def read(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise expected("true or false", value)
        return value

    def write(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "true | false"


@dataclass(frozen=True)
class Choice:
    choices: tuple[str, ...]

    def read(self, value: Any) -> str:
        if not isinstance(value, str):
            raise expected(f"one of {', '.join(self.choices)}", value)
        if value not in self.choices:
            raise Invalid(f"must be one of {', '.join(self.choices)}, got {label(value)!r}")
        return value

    def write(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return " | ".join(self.choices)


@dataclass(frozen=True)
class PortRange:
    def read(self, value: Any) -> tuple[int, int]:
        if not isinstance(value, str):
            raise expected("a port range such as 8000-9000", value)
        match = re.fullmatch(r"([0-9]{1,5})-([0-9]{1,5})", value)
        if match is None:
            raise Invalid(
                f"{label(value)!r} is not a port range: write it as low-high, such as 8000-9000"
            )
        low, high = int(match[1]), int(match[2])
        if not (1 <= low <= high <= 65535):
            raise Invalid(f"port range {value} must be within 1-65535, low before high")
        return low, high

    def write(self, value: Any) -> Any:
        return f"{value[0]}-{value[1]}"

    def describe(self) -> str:
        return "low-high, within 1-65535"


@dataclass(frozen=True)
class Schemes:
    """`auto`, one scheme, or a list of them; auto is None."""

    def read(self, value: Any) -> tuple[str, ...] | None:
        if value == "auto":
            return None
        listed = [value] if isinstance(value, str) else value
        wanted = f"auto or a list of {', '.join(SCHEMES)}"
        if not isinstance(listed, list) or not listed:
            raise expected(wanted, value)
        for item in listed:
            if not isinstance(item, str) or item not in SCHEMES:
                raise Invalid(f"must be {wanted}; {shown_value(item)} is not a scheme")
        return tuple(dict.fromkeys(listed))

    def write(self, value: Any) -> Any:
        return "auto" if value is None else list(value)

    def describe(self) -> str:
        return f"auto, or a list of {', '.join(SCHEMES)}"


# More names than any honest setup lists; a bound keeps the check on each request cheap.
MAX_ALLOWED_HOSTS = 64


@dataclass(frozen=True)
class HostNames:
    """A list of host names or IP addresses (no port, no wildcard), kept normalized as the
    Host check compares them (`core.hosts`): lowercase, no trailing dot, IPv6 bracketed."""

    def read(self, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise expected("a list of host names or IP addresses", value)
        if len(value) > MAX_ALLOWED_HOSTS:
            raise Invalid(f"lists {len(value)} names; the limit is {MAX_ALLOWED_HOSTS}")
        names = []
        for item in value:
            if not isinstance(item, str):
                raise Invalid(
                    f"each entry is a host name or IP address; {shown_value(item)} is not"
                )
            if "*" in item:
                raise Invalid(f"{label(item)!r}: wildcards are not accepted; list each name")
            try:
                names.append(normalize_name(item))
            except HostError as exc:
                raise Invalid(f"{label(item)!r} is not a host name or IP address: {exc}") from None
        return tuple(dict.fromkeys(names))

    def write(self, value: Any) -> Any:
        return list(value)

    def describe(self) -> str:
        return "list of host names or IP addresses"

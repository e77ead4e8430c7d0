"""Time as fsup writes it: RFC 3339 in UTC, everywhere (store rows, events, logs, audit).

One helper, so that every timestamp a client sees has the same shape and can be compared as
text: seconds for records (`rfc3339_now`), microseconds for log lines (`rfc3339_at`).
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339_now() -> str:
    """Now, to the second: `2026-12-03T18:20:00Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_at(seconds: float) -> str:
    """A Unix time, to the microsecond: `2026-12-03T18:20:00.123456Z`."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

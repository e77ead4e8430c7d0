"""A formation's events in words: how a process exited, how far its health gate is."""

from __future__ import annotations

import signal
from typing import Any, Protocol

from supervisor.core.manifest import HealthSpec


class Countdown(Protocol):
    @property
    def attempt(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def remaining_s(self) -> float: ...
    @property
    def last_error(self) -> str | None: ...


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "exited (exit code unknown: adopted from an earlier fsup)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def exit_details(returncode: int | None) -> dict[str, Any]:
    """How a process ended, for an event: its `exit_code` (None when a signal ended it or the
    code is unknown), the `signal` by name, and the whole in words (`description`)."""
    signal_name: str | None = None
    if returncode is not None and returncode < 0:
        try:
            signal_name = signal.Signals(-returncode).name
        except ValueError:
            signal_name = f"signal {-returncode}"
    return {
        "exit_code": returncode if returncode is not None and returncode >= 0 else None,
        "signal": signal_name,
        "description": describe_exit(returncode).removeprefix("was "),
    }


def health_event(event: Countdown, health: HealthSpec) -> dict[str, Any]:
    """A `health_check` progress event: the seed's countdown."""
    return {
        "stage": "health_check",
        "message": f"Health check {event.attempt}/{event.max_attempts} ({health.kind}), "
        f"{event.remaining_s:g}s left",
        "attempt": event.attempt,
        "max_attempts": event.max_attempts,
        "remaining_s": event.remaining_s,
        **({"last_error": event.last_error} if event.last_error else {}),
    }

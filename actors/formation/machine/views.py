"""A formation as JSON for the API (snapshot, nodes, search target) and as words (exits,
health countdowns). Pure functions of the machine's state and what the driver read for them
(the store's row, the route's last good check, the clocks), so that the machine and the
driver hold no JSON of their own.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.core.manifest import HealthSpec

if TYPE_CHECKING:
    from supervisor.storage.store import FormationRow

    from .formation import FormationMachine


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


def result(m: FormationMachine, status: str) -> dict[str, Any]:
    """The answer to a lifecycle request (and the data of its `complete` event)."""
    return {
        "formation_id": m.id,
        "status": status,
        "port": m.port,
        "version": m.spec.version,
        "pid": m.pid,
        "healthy": m.healthy,
    }


def snapshot(
    m: FormationMachine,
    row: FormationRow | None,
    versions: list[str],
    uptime_s: float | None,
) -> dict[str, Any]:
    """The formation as `GET /rpc/formations/{id}` shows it."""
    return {
        "id": m.id,
        "version": m.spec.version,
        "description": m.spec.description,
        "status": m.state.value,
        "port": m.port,
        "pid": m.pid,
        "healthy": m.healthy,
        "restart_count": m.restart_count,
        "uptime_s": uptime_s,
        "created_at": row.created_at if row else None,
        "updated_at": row.updated_at if row else None,
        "desired": row.desired if row else None,
        "versions": versions,
        "update_in_progress": m.job is not None,
        "last_exit_code": m.last_exit_code,
        "last_error": m.last_error,
    }


def nodes(m: FormationMachine, health_check_age_s: float | None) -> list[dict[str, Any]]:
    """The formation's processes: the active one, and a staging one mid-update."""
    found = []
    if m.pid is not None:
        found.append(
            {
                "formation_id": m.id,
                "role": "active",
                "pid": m.pid,
                "port": m.port,
                "state": m.state.value,
                "healthy": m.healthy,
                "restart_count": m.restart_count,
                "last_health_check_age_s": health_check_age_s,
            }
        )
    job = m.job
    if job is not None and job.pid is not None and job.phase.value in ("gating", "aborting"):
        found.append(
            {
                "formation_id": m.id,
                "role": "staging",
                "pid": job.pid,
                "port": job.port,
                "state": "starting",
                "healthy": None,
                "restart_count": 0,
                "last_health_check_age_s": None,
            }
        )
    return found


def search_target(m: FormationMachine, log_dir: Path) -> dict[str, Any]:
    serving = m.state.value == "running" and m.pid is not None
    return {
        "formation_id": m.id,
        "port": m.port if serving else None,
        "search_path": m.spec.search.path if m.spec.search else None,
        "log_dir": log_dir,
    }

"""A formation as JSON for the API (snapshot, nodes, search target). Pure functions of the
machine's state and what the driver read for them (the store's row, the route's last good
check, the clocks), so that the machine and the driver hold no JSON of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .lifecycle import State
from .update import STAGING

if TYPE_CHECKING:
    from supervisor.storage.store import FormationRow

    from .process_life import ProcessLife


def result(m: ProcessLife, status: str) -> dict[str, Any]:
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
    m: ProcessLife,
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


def nodes(m: ProcessLife, health_check_age_s: float | None) -> list[dict[str, Any]]:
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
    if job is not None and job.pid is not None and job.phase in STAGING:
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


def search_target(m: ProcessLife, log_dir: Path) -> dict[str, Any]:
    serving = m.state is State.RUNNING and m.pid is not None
    return {
        "formation_id": m.id,
        "port": m.port if serving else None,
        "search_path": m.spec.search.path if m.spec.search else None,
        "log_dir": log_dir,
    }

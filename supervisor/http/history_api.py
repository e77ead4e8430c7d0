"""`/api/v1/.../history`: the formations' recent figures for the dashboard's charts.

The samples are those the telemetry tick keeps (`runtime.history`): answering reads memory
only (and the store's row of the formation asked for), no process and no actor.
`GET /api/v1/formations/{id}/history` gives one formation's whole hour (404 for an unknown
id); `GET /api/v1/history?points=N` the fleet's last N samples each, for the sparklines.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from supervisor.core.errors import FsupError
from supervisor.http.api_v1 import api_auth_hook
from supervisor.http.params import int_param
from supervisor.http.services import services
from supervisor.runtime.history import INTERVAL_S, SAMPLES

PREFIX = "/api/v1"
DEFAULT_POINTS = 60  # five minutes: a sparkline's worth


async def formation_history(formation_id: str) -> Any:
    svc = services()
    # The store's row, as the timeline's: it stands from the deploy until the delete is done.
    if svc.store.formation(formation_id) is None:
        raise FsupError(
            "FORMATION_NOT_FOUND",
            f"formation '{formation_id}' not found",
            {"formation_id": formation_id},
        )
    samples = svc.history.samples(formation_id)
    return {
        "formation_id": formation_id,
        "interval_s": INTERVAL_S,
        "samples": [sample.to_json() for sample in samples],
    }


async def fleet_history() -> Any:
    points = int_param("points", DEFAULT_POINTS, 1, SAMPLES)
    fleet = services().history.fleet(points)
    return {
        "interval_s": INTERVAL_S,
        "formations": {fid: [s.to_json() for s in samples] for fid, samples in fleet.items()},
    }


def blueprint() -> Blueprint:
    """Behind `/api/v1`'s auth (bearer, or cookie + cross-site check), as the fleet's."""
    bp = Blueprint("history_api", __name__)
    bp.before_request(api_auth_hook)
    bp.get(f"{PREFIX}/formations/<formation_id>/history")(formation_history)
    bp.get(f"{PREFIX}/history")(fleet_history)
    return bp

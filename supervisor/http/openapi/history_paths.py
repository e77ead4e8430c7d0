"""The formations' recent figures in the OpenAPI document (`http.history_api`): one
formation's last hour, and the fleet's last samples for the dashboard's sparklines."""

from __future__ import annotations

from supervisor.http.openapi.kit import (
    BAD,
    EITHER,
    FORMATION_ID,
    INT,
    NUM,
    STR,
    Schema,
    array,
    int_query,
    maybe,
    obj,
    ok,
    operation,
    ref,
)
from supervisor.runtime.history import SAMPLES

# `http.history_api.DEFAULT_POINTS`: five minutes of samples.
POINTS = int_query("points", 1, SAMPLES, 60, "How many samples per formation, the newest")
NOTE = (
    "One sample every `interval_s` (5 s) per formation, the last hour (720) at most, oldest "
    "first, kept in memory: fsup's restart starts them anew, a deleted formation's are "
    "forgotten. `cpu_percent` (of one core, since the previous sample) and `rss_bytes` are "
    "those of the process serving the formation's requests, null while none is (or at the "
    "first look at a new process); `restarts` counts its restarts since fsup started; "
    "`requests_per_s` the requests proxied to it over the last interval."
)


def history_schemas() -> dict[str, Schema]:
    sample = obj(
        {
            "t": NUM,
            "cpu_percent": maybe(NUM),
            "rss_bytes": maybe(INT),
            "restarts": INT,
            "requests_per_s": NUM,
        }
    )
    return {
        "HistorySample": sample,
        "FormationHistory": obj(
            {"formation_id": STR, "interval_s": INT, "samples": array(ref("HistorySample"))}
        ),
        "FleetHistory": obj(
            {
                "interval_s": INT,
                "formations": {
                    "type": "object",
                    "additionalProperties": array(ref("HistorySample")),
                },
            }
        ),
    }


def history_paths() -> dict[str, Schema]:
    return {
        "/api/v1/formations/{formation_id}/history": {
            "get": operation(
                "api_formation_history",
                "A formation's figures over the last hour (CPU, memory, restarts, requests/s)",
                "formations",
                ok("The samples, oldest first", ref("FormationHistory")),
                {**BAD, 404: ["FORMATION_NOT_FOUND"]},
                EITHER,
                [FORMATION_ID],
                description=NOTE,
            )
        },
        "/api/v1/history": {
            "get": operation(
                "api_fleet_history",
                "Every formation's last samples (the dashboard's sparklines)",
                "formations",
                ok("The samples by formation id, oldest first", ref("FleetHistory")),
                BAD,
                EITHER,
                [POINTS],
                description=NOTE,
            )
        },
    }

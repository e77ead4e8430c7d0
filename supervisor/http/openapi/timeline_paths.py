"""A formation's timeline in the OpenAPI document: `GET .../formations/{id}/events` on
`/rpc` (signed) and on `/api/v1` (bearer or cookie), with the one answer they share."""

from __future__ import annotations

from supervisor.http.openapi.kit import (
    ANY_OBJECT,
    BAD,
    EITHER,
    FORMATION_ID,
    HMAC,
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

# The limit's bounds (`http.timeline`: EVENTS_DEFAULT, EVENTS_MAX).
LIMIT = int_query("limit", 1, 1000, 100, "How many events, the newest (oldest first)")
NOTE = (
    "The formation's `formation_*` events (state changes with the exit that caused them, "
    "health changes, updates, rollbacks and failed ones...) as the event stream sent them, "
    "newest last; kept in the store, the last 1,000 per formation, so they survive restarts "
    "of fsup, and deleted with the formation."
)


def timeline_schemas() -> dict[str, Schema]:
    envelope = obj({"type": STR, "ts": STR, "search_id": maybe(STR), "data": ANY_OBJECT})
    return {"FormationEvents": obj({"formation_id": STR, "events": array(envelope)})}


def timeline_paths() -> dict[str, Schema]:
    errors = {**BAD, 404: ["FORMATION_NOT_FOUND"]}
    answer = ok("The timeline", ref("FormationEvents"))
    return {
        f"{prefix}/formations/{{formation_id}}/events": {
            "get": operation(
                op_id,
                "A formation's timeline: what happened to it, newest last",
                "formations",
                answer,
                errors,
                security,
                [FORMATION_ID, LIMIT],
                description=NOTE,
            )
        }
        for prefix, op_id, security in (
            ("/rpc", "formation_events", HMAC),
            ("/api/v1", "api_formation_events", EITHER),
        )
    }

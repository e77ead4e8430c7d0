"""A formation's timeline (`GET .../formations/{id}/events`): the same answer on `/rpc` and
on `/api/v1`, read from the store (`store.timeline`), where the bus's `formation_*`
envelopes are kept so that they outlive a restart of fsup."""

from __future__ import annotations

from typing import Any

from supervisor.core.errors import FsupError
from supervisor.http.params import int_param
from supervisor.http.services import services

# `limit`: how many envelopes, the newest; its default and its bound (the store keeps this
# many per formation, `store.TIMELINE_KEEP`).
EVENTS_DEFAULT = 100
EVENTS_MAX = 1_000


async def events_answer(formation_id: str) -> dict[str, Any]:
    """`{"formation_id", "events": [envelope...]}`, newest last; 404 for an unknown
    formation, 400 for a `limit` outside 1..`EVENTS_MAX`."""
    limit = int_param("limit", EVENTS_DEFAULT, 1, EVENTS_MAX)
    store = services().store
    # The store's row, not the actor: it stands from the deploy until the delete is done,
    # and a busy actor does not keep its history from being read.
    if store.formation(formation_id) is None:
        raise FsupError(
            "FORMATION_NOT_FOUND",
            f"formation '{formation_id}' not found",
            {"formation_id": formation_id},
        )
    return {"formation_id": formation_id, "events": store.timeline(formation_id, limit)}

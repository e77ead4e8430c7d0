"""`/api/v1/formations`: the fleet for the dashboard, with the session cookie (or the bearer).

The same formations and lifecycle as `/rpc/formations`, reached the way any `/api/v1` client
authenticates, so that a browser page never holds the HMAC secret or signs `/rpc` requests.
Handlers reuse `rpc`'s helpers (ask with a bound, the lookup, the listing with its fallback
for a busy actor, the log tail and follower) and add each process's CPU and memory (psutil,
as `/api/v1/nodes` does). Lifecycle calls answer once with JSON when done; the page follows
their progress on the event stream (`formation_state_changed`...), not on this answer.
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint

from actors.fleet import Delete
from supervisor import operations
from supervisor.http.api_v1 import api_auth_hook
from supervisor.http.process_watch import ProcessWatch
from supervisor.http.rpc import (
    DELETE_TIMEOUT_S,
    LIFECYCLE,
    ask,
    formation_ref,
    formation_view,
    logs_answer,
    snapshots,
)
from supervisor.http.services import services
from supervisor.http.timeline import events_answer

PREFIX = "/api/v1/formations"
FIGURES = ("cpu_percent", "rss_bytes")


async def with_figures(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each snapshot with its process's `cpu_percent` and `rss_bytes` (null without one)."""
    await trio.to_thread.run_sync(_add_figures, items, services().process_watch)
    return items


def _add_figures(items: list[dict[str, Any]], watch: ProcessWatch) -> None:
    """Blocking (psutil reads /proc): run in a thread."""
    for item in items:
        pid = item.get("pid")
        figures = watch.figures(pid) if isinstance(pid, int) else {}
        for name in FIGURES:
            item[name] = figures.get(name)


async def api_formations() -> Any:
    items = await with_figures(await snapshots())
    return {"formations": items, "total": len(items)}


async def api_formation(formation_id: str) -> Any:
    return (await with_figures([await formation_view(formation_id)]))[0]


async def api_lifecycle(formation_id: str, action: str) -> Any:
    """`POST .../{action}` (a key of `rpc.LIFECYCLE`), answered once with the outcome's JSON
    when the change is done. `action` is not in the path: each route's rule gives it as a
    default (`blueprint`)."""
    message, first_stage = LIFECYCLE[action]
    ref = await formation_ref(formation_id, change=True)
    fleet = services().fleet
    relayed = operations.relay(ref, message, first_stage, fleet, formation_id)
    last = await operations.outcome(relayed)
    if last.error is not None:
        raise last.error
    return last.data


async def api_delete(formation_id: str) -> Any:
    return await ask(services().fleet, Delete(formation_id), DELETE_TIMEOUT_S)


async def api_formation_logs(formation_id: str) -> Any:
    """The last lines; with `follow=true`, an SSE stream of them and then of each new
    line (`event: log`), which an EventSource can open with the cookie."""
    return await logs_answer(formation_id)


async def api_formation_events(formation_id: str) -> Any:
    """The formation's timeline, as `/rpc` answers it (`http.timeline`)."""
    return await events_answer(formation_id)


def blueprint() -> Blueprint:
    """`/api/v1/formations`, behind `/api/v1`'s auth (bearer, or cookie + cross-site check)."""
    bp = Blueprint("fleet_api", __name__)
    bp.before_request(api_auth_hook)
    bp.get(PREFIX)(api_formations)
    bp.get(f"{PREFIX}/<formation_id>")(api_formation)
    for action in LIFECYCLE:
        bp.add_url_rule(
            f"{PREFIX}/<formation_id>/{action}",
            f"api_{action}",
            api_lifecycle,
            methods=["POST"],
            defaults={"action": action},
        )
    bp.delete(f"{PREFIX}/<formation_id>")(api_delete)
    bp.get(f"{PREFIX}/<formation_id>/logs")(api_formation_logs)
    bp.get(f"{PREFIX}/<formation_id>/events")(api_formation_events)
    return bp

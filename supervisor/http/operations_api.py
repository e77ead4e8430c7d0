"""`/api/v1` operations (seed 003's Routing/Nodes), as DESIGN section 7 reads them for a
supervisor: nodes are the supervised processes, the routing summary is the proxy's table."""

from __future__ import annotations

import time
from typing import Any

import psutil
import trio
from quart import Blueprint, request

from actors.fleet import Reconcile
from actors.formation import Nodes, ProbeNow
from supervisor.core.safe_json import query_int
from supervisor.http.api_v1 import api_auth_hook
from supervisor.http.rpc import ask, ask_formations
from supervisor.http.services import services
from supervisor.runtime.routing import RouteTable

PREFIX = "/api/v1"
# psutil.Process objects kept between calls, so cpu_percent measures since the last look.
# Every restart brings a new pid and the status, the formation list and the nodes all look
# (only the nodes forgot the gone ones), so the dead are pruned whenever it has grown past
# twice what was alive at the last pruning: bounded by the processes alive, not by history.
_watched: dict[int, psutil.Process] = {}
PRUNE_FLOOR = 64
_prune_above = PRUNE_FLOOR


def process_figures(pid: int) -> dict[str, Any]:
    """cpu_percent (since the previous call for this pid; 0.0 the first time), rss_bytes,
    uptime_s. Blocking: run in a thread."""
    try:
        proc = _watched.get(pid)
        if proc is None or not proc.is_running():
            proc = _watch(pid)
        with proc.oneshot():
            return {
                "cpu_percent": proc.cpu_percent(interval=None),
                "rss_bytes": proc.memory_info().rss,
                "uptime_s": round(time.time() - proc.create_time(), 3),
            }
    except psutil.Error:
        _watched.pop(pid, None)
        return {"cpu_percent": None, "rss_bytes": None, "uptime_s": None}


def _watch(pid: int) -> psutil.Process:
    global _prune_above  # noqa: PLW0603 - the module's one cache, as `_watched`
    if len(_watched) >= _prune_above:
        for known, proc in list(_watched.items()):
            if not proc.is_running():
                _watched.pop(known, None)  # another thread may have dropped it too
        _prune_above = max(PRUNE_FLOOR, 2 * len(_watched))
    proc = _watched[pid] = psutil.Process(pid)
    return proc


def forget_gone(pids: set[int]) -> None:
    for pid in list(_watched):
        if pid not in pids:
            del _watched[pid]


async def all_nodes() -> list[dict[str, Any]]:
    answers = await ask_formations(Nodes(), lambda _: [])
    nodes = [node for _, formation_nodes in answers for node in formation_nodes]
    await trio.to_thread.run_sync(_add_figures, nodes, services().routes)
    return nodes


def _add_figures(nodes: list[dict[str, Any]], routes: RouteTable) -> None:
    """Each node's process figures and its formation's proxy figures; the processes no node
    names are forgotten. Blocking (psutil reads /proc): run in a thread."""
    for node in nodes:
        node.update(process_figures(node["pid"]))
        route = routes.get(node.get("formation_id", ""))
        if route is not None:  # its formation's held and retried requests
            node["proxy"] = route.figures.to_json()
    forget_gone({node["pid"] for node in nodes})


async def routing_summary() -> Any:
    routes = services().routes
    return routes.summary(trio.current_time())


async def routing_refresh() -> Any:
    """Each formation health-checks its running process now; the answer names those that
    started a check (one that does not answer in time counts as not probing)."""
    answers = await ask_formations(ProbeNow(), lambda _: {"probing": False})
    probing = [formation_id for formation_id, answer in answers if answer["probing"]]
    return {"refreshing": probing, "total": len(answers)}


async def nodes() -> Any:
    limit = query_int(request.args, "limit", 100, 1, 1000)
    offset = query_int(request.args, "offset", 0, 0, 1_000_000)
    found = await all_nodes()
    return {
        "nodes": found[offset : offset + limit],
        "total": len(found),
        "limit": limit,
        "offset": offset,
    }


async def bootstrap_fleet() -> Any:
    return await ask(services().fleet, Reconcile(), 30.0)


def blueprint() -> Blueprint:
    """`/api/v1` operations (routing, nodes, bootstrap), behind the bearer token."""
    bp = Blueprint("operations", __name__)
    bp.before_request(api_auth_hook)
    bp.get(f"{PREFIX}/routing/summary")(routing_summary)
    bp.post(f"{PREFIX}/routing/refresh")(routing_refresh)
    bp.get(f"{PREFIX}/nodes")(nodes)
    bp.post(f"{PREFIX}/bootstrap")(bootstrap_fleet)
    return bp

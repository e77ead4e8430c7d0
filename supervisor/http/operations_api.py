"""`/api/v1` operations (seed 003's Routing/Nodes), as DESIGN section 7 reads them for a
supervisor: nodes are the supervised processes, the routing summary is the proxy's table."""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, request

from actors.fleet import Reconcile
from actors.formation import Nodes, ProbeNow
from supervisor.core.safe_json import query_int
from supervisor.http.api_v1 import api_auth_hook
from supervisor.http.process_watch import ProcessWatch
from supervisor.http.rpc import ask, ask_formations
from supervisor.http.services import services
from supervisor.runtime.routing import RouteTable

PREFIX = "/api/v1"


async def all_nodes() -> list[dict[str, Any]]:
    answers = await ask_formations(Nodes(), lambda _: [])
    nodes = [node for _, formation_nodes in answers for node in formation_nodes]
    svc = services()
    await trio.to_thread.run_sync(_add_figures, nodes, svc.routes, svc.process_watch)
    return nodes


def _add_figures(nodes: list[dict[str, Any]], routes: RouteTable, watch: ProcessWatch) -> None:
    """Each node's process figures and its formation's proxy figures; the processes no node
    names are forgotten. Blocking (psutil reads /proc): run in a thread."""
    for node in nodes:
        node.update(watch.figures(node["pid"]))
        route = routes.get(node.get("formation_id", ""))
        if route is not None:  # its formation's held and retried requests
            node["proxy"] = route.figures.to_json()
    watch.forget_gone({node["pid"] for node in nodes})


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

"""`/rpc/*`: the seed's management API (signed; see `app.authenticate`)."""

from __future__ import annotations

import time
from typing import Any

import trio
from quart import current_app, jsonify, request
from quart_trio import QuartTrio

from actors.base import ActorError, ActorRef
from actors.fleet import Delete, ListFormations, Lookup, PortStatus
from actors.formation import CancelUpdate, Restart, Rollback, Snapshot, Start, Stop

from .. import __version__, operations
from ..errors import FsupError
from ..operations import Services
from .render import render_operation

# How long a read (snapshot, list) waits for a formation actor before saying so.
ASK_TIMEOUT_S = 5.0
# Deletes wait for a graceful stop (stop.timeout, at most 300 s) and the SIGKILL grace.
DELETE_TIMEOUT_S = 330.0

_started = time.monotonic()


def services() -> Services:
    return current_app.extensions["fsup"]  # type: ignore[no-any-return]


async def ask(ref: ActorRef, message: Any, within: float = ASK_TIMEOUT_S) -> Any:
    """Ask an actor with a bound; a silent or vanished actor becomes a clean 503."""
    try:
        with trio.fail_after(within):
            return await ref.ask(message)
    except trio.TooSlowError:
        raise FsupError(
            "FORMATION_UNAVAILABLE", f"{ref.name} did not answer within {within:g}s; retry"
        ) from None
    except ActorError as exc:
        raise FsupError("FORMATION_UNAVAILABLE", f"{ref.name} is unavailable: {exc}") from None


async def formation_ref(formation_id: str) -> ActorRef:
    return await ask(services().fleet, Lookup(formation_id))  # type: ignore[no-any-return]


async def snapshots() -> list[dict[str, Any]]:
    pairs = await ask(services().fleet, ListFormations())
    found: dict[str, dict[str, Any]] = {}

    async def one(formation_id: str, ref: ActorRef) -> None:
        try:
            found[formation_id] = await ask(ref, Snapshot())
        except FsupError:
            found[formation_id] = {"id": formation_id, "status": "unknown"}

    async with trio.open_nursery() as nursery:
        for formation_id, ref in pairs:
            nursery.start_soon(one, formation_id, ref)
    return [found[fid] for fid, _ in pairs]


# Lifecycle routes: the message each sends its formation, and the first stage it reports.
LIFECYCLE: dict[str, tuple[Any, str]] = {
    "start": (Start(), "spawning"),
    "stop": (Stop(), "stopping"),
    "restart": (Restart(), "stopping"),
    "rollback": (Rollback(), "spawning_staging"),
}


def lifecycle_handler(message: Any, first_stage: str) -> Any:
    async def handler(formation_id: str) -> Any:
        ref = await formation_ref(formation_id)
        return await render_operation(operations.relay(ref, message, first_stage))

    return handler


def register(app: QuartTrio) -> None:
    async def deploy() -> Any:
        body = await request.get_data(cache=True)
        _check_bundle_type()
        expected = request.headers.get("X-Formation-ID") or None
        events = operations.deploy(services(), body, expected)
        return await render_operation(events, success_status=201)

    app.add_url_rule("/rpc/formations/deploy", "deploy", deploy, methods=["POST"])
    app.add_url_rule("/rpc/formations", "deploy_alias", deploy, methods=["POST"])

    @app.get("/rpc/formations")
    async def list_formations() -> Any:
        items = await snapshots()
        return {"formations": items, "total": len(items)}

    @app.get("/rpc/formations/<formation_id>")
    async def get_formation(formation_id: str) -> Any:
        return await ask(await formation_ref(formation_id), Snapshot())

    for action, (message, first_stage) in LIFECYCLE.items():
        app.add_url_rule(
            f"/rpc/formations/<formation_id>/{action}",
            action,
            lifecycle_handler(message, first_stage),
            methods=["POST"],
        )

    @app.put("/rpc/formations/<formation_id>")
    async def update(formation_id: str) -> Any:
        body = await request.get_data(cache=True)
        _check_bundle_type()
        ref = await formation_ref(formation_id)
        events = operations.update(services(), ref, formation_id, body)
        return await render_operation(events)

    @app.post("/rpc/formations/<formation_id>/cancel-update")
    async def cancel_update(formation_id: str) -> Any:
        return await ask(await formation_ref(formation_id), CancelUpdate(), DELETE_TIMEOUT_S)

    @app.delete("/rpc/formations/<formation_id>")
    async def delete(formation_id: str) -> Any:
        return await ask(services().fleet, Delete(formation_id), DELETE_TIMEOUT_S)

    @app.get("/rpc/server/status")
    async def status() -> Any:
        items = await snapshots()
        ports = await ask(services().fleet, PortStatus())
        counts = {"total": len(items), "running": 0, "stopped": 0, "crashed": 0}
        for item in items:
            if item.get("status") in counts:
                counts[item["status"]] += 1
        return jsonify(
            {
                "server_id": current_app.extensions["fsup.server_id"],
                "version": __version__,
                "uptime_s": round(time.monotonic() - _started, 3),
                "formations": counts,
                "ports": {"range": ports.range, "allocated": ports.allocated,
                          "available": ports.available},
            }
        )


def _check_bundle_type() -> None:
    content_type = request.headers.get("Content-Type", "")
    if content_type and not _is_bundle_type(content_type):
        raise FsupError(
            "INVALID_BUNDLE",
            f"Content-Type {content_type!r} is not a bundle; send application/gzip "
            "or application/zip",
        )


def _is_bundle_type(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind in {
        "application/gzip", "application/x-gzip", "application/x-tar", "application/x-gtar",
        "application/zip", "application/x-zip-compressed", "application/octet-stream",
    }

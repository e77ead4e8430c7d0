"""`/rpc/*`: the seed's management API (signed; see `rpc_auth.authenticate`)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

import trio
from quart import Blueprint, jsonify, make_response, request

from actors.base import ActorCrashed, ActorError, ActorRef, Call
from actors.fleet import Delete, Describe, ListEntries, Lookup, PortStatus
from actors.formation import (
    CancelUpdate,
    CurrentVersion,
    Restart,
    Rollback,
    Snapshot,
    Start,
    Stop,
)
from supervisor import __version__, operations
from supervisor.core.errors import FsupError
from supervisor.core.manifest import id_problem, parse_manifest
from supervisor.http import rpc_auth, sse
from supervisor.http.params import bool_param, choice_param, lines_param
from supervisor.http.render import render_operation
from supervisor.http.services import keeper_state, services
from supervisor.http.timeline import events_answer
from supervisor.runtime.events import HEARTBEAT_S
from supervisor.runtime.routing import RouteTable
from supervisor.storage import failed_deploys
from supervisor.storage.formation_logs import STREAMS, tail
from supervisor.storage.log_files import LogLine
from supervisor.storage.log_follow import LogFollower
from supervisor.storage.store import Store
from supervisor.storage.versions import zip_version

# How long a read (snapshot, list) waits for a formation actor before saying so.
ASK_TIMEOUT_S = 5.0
# Deletes wait for a graceful stop (stop.timeout, at most 300 s) and the SIGKILL grace.
DELETE_TIMEOUT_S = 330.0

_started = time.monotonic()


async def ask(ref: ActorRef, message: Any, within: float = ASK_TIMEOUT_S) -> Any:
    """Ask an actor with a bound; a silent or vanished actor becomes a clean 503."""
    try:
        with trio.fail_after(within):
            return await ref.ask(message)
    except trio.TooSlowError:
        raise FsupError(
            "FORMATION_UNAVAILABLE", f"{ref.name} did not answer within {within:g}s; retry"
        ) from None
    except ActorCrashed as exc:
        # A bug inside the actor: logged there with its traceback; the actor is restarted.
        raise FsupError(
            "INTERNAL", f"{ref.name} failed while handling the request and was restarted; retry"
        ) from exc
    except ActorError as exc:
        raise FsupError("FORMATION_UNAVAILABLE", f"{ref.name} is unavailable: {exc}") from None


async def logs_answer(formation_id: str) -> Any:
    """A formation's last log lines (`lines`, `stream`), or with `follow=true` an SSE stream
    of them and then of each new line: the same answer on `/rpc` and `/api/v1`. An id whose
    first deploy failed (and is gone) answers with that attempt's kept log and
    `failed_deploy` saying when and why (`storage.failed_deploys`)."""
    failed = await failed_deploy_or_404(formation_id)
    count = lines_param(100, 0, MAX_LOG_LINES)
    stream = choice_param("stream", ("all", *STREAMS), "all")
    follow = bool_param("follow", False)
    home = services().home
    log_dir = home.failed_deploy_logs(formation_id) if failed else home.formation_logs(formation_id)
    streams = STREAMS if stream == "all" else (stream,)
    backups = services().config.logs.backups
    # Before the history: a line written between the two is then in both, never in neither.
    follower = await trio.to_thread.run_sync(LogFollower, log_dir, streams) if follow else None
    history = await trio.to_thread.run_sync(read_history, log_dir, streams, count, backups)
    if follower is None:
        kept = {"failed_deploy": failed} if failed else {}
        return {"formation_id": formation_id, "lines": history, **kept}
    routes = services().routes  # taken now: the stream runs outside the app context
    return await sse.numbered_response(follow_logs(routes, formation_id, follower, history))


async def failed_deploy_or_404(formation_id: str) -> dict[str, Any] | None:
    """None for a formation that exists; for one that does not, what is kept of its failed
    first deploy, else its 404. The id is checked before it names a folder."""
    try:
        await formation_ref(formation_id)
        return None
    except FsupError as exc:
        if exc.code != "FORMATION_NOT_FOUND" or id_problem(formation_id) is not None:
            raise
        kept = services().home.failed_deploy_logs(formation_id)
        failed = await trio.to_thread.run_sync(failed_deploys.read_meta, kept)
        if failed is None:
            raise
        return failed


async def formation_ref(formation_id: str, change: bool = False) -> ActorRef:
    """The formation's actor: 404 once it is gone; for a `change`, 409 `FORMATION_BUSY` while
    it is being deleted (reads still find it then)."""
    return await ask(services().fleet, Lookup(formation_id, change))  # type: ignore[no-any-return]


async def formation_view(formation_id: str) -> dict[str, Any]:
    """One formation as `GET .../formations/{id}` shows it: its actor's snapshot with
    `deleting`, true from an accepted delete until the formation is gone (then a 404). Its
    actor may end a moment before the fleet drops it: the store's entry stands in then."""
    fleet = services().fleet
    ref, deleting = await ask(fleet, Describe(formation_id))
    try:
        snapshot = await ask(ref, Snapshot())
    except FsupError as exc:
        if exc.code != "FORMATION_UNAVAILABLE":
            raise
        _, deleting = await ask(fleet, Describe(formation_id))  # 404 if gone meanwhile
        if not deleting:
            raise
        snapshot = stored_snapshot(services().store, formation_id)
    return {**snapshot, "deleting": deleting}


async def ask_formations(message: Any, fallback: Callable[[str], Any]) -> list[tuple[str, Any]]:
    """Ask every formation the same thing at once; `(id, answer)` in the fleet's order, with
    `fallback(id)` for one that does not answer within `ASK_TIMEOUT_S` (or fails to).

    Every request is posted before any answer is awaited, so the actors work on them
    together and the wait is the slowest one's; no task is started per formation (the
    listing's cost was mostly that bookkeeping: a task, a deadline and a channel each)."""
    return [(fid, answer) for fid, answer, _ in await ask_entries(message, fallback)]


async def ask_entries(message: Any, fallback: Callable[[str], Any]) -> list[tuple[str, Any, bool]]:
    """`ask_formations` with each formation's `deleting` flag (those being deleted are
    asked too: they stay visible until they are gone)."""
    entries = await ask(services().fleet, ListEntries())
    pairs = [(fid, ref) for fid, ref, _ in entries]
    found: dict[str, Any] = {}
    calls: list[tuple[str, Call]] = []
    try:
        with trio.move_on_after(ASK_TIMEOUT_S):
            for formation_id, ref in pairs:
                try:
                    calls.append((formation_id, await ref.request(message)))
                except ActorError:
                    pass  # stopped: its fallback
            for formation_id, call in calls:
                try:
                    found[formation_id] = await call.result()
                except (ActorError, FsupError):
                    pass  # crashed while answering (logged by the actor): its fallback
    finally:
        for _, call in calls:
            call.close()
    return [
        (fid, found[fid] if fid in found else fallback(fid), deleting)
        for fid, _, deleting in entries
    ]


async def snapshots() -> list[dict[str, Any]]:
    store = services().store
    answers = await ask_entries(Snapshot(), lambda fid: stored_snapshot(store, fid))
    return [{**snapshot, "deleting": deleting} for _, snapshot, deleting in answers]


def stored_snapshot(store: Store, formation_id: str) -> dict[str, Any]:
    """The listing entry of a formation whose actor did not answer in time: the keys of a
    snapshot, filled from the store (null where only the actor knows), `status: "unknown"` and
    `stale: true`; the stored `desired` state and recorded `pid` say what it should be doing."""
    row = store.formation(formation_id)
    if row is None:  # deleted in the meantime
        return {"id": formation_id, "status": "unknown", "stale": True}
    started = row.pid_started if row.pid is not None else None
    return {
        "id": row.id,
        "version": row.current_version,
        "description": _stored_description(store, row.id, row.current_version),
        "status": "unknown",
        "port": row.port,
        "pid": row.pid,
        "healthy": None,
        "restart_count": None,
        "uptime_s": round(max(0.0, time.time() - started), 3) if started is not None else None,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "desired": row.desired,
        "deleting": row.deleting,
        "versions": [v.version for v in store.versions(row.id)],
        "update_in_progress": None,
        "last_exit_code": None,
        "last_error": f"formation:{row.id} did not answer in time (busy or restarting); "
        "this entry is what the store records",
        "stale": True,
    }


def _stored_description(store: Store, formation_id: str, version: str) -> str:
    row = store.version(formation_id, version)
    try:
        return parse_manifest(row.manifest).description if row is not None else ""
    except FsupError:
        return ""  # an unrestorable version: its manifest no longer loads


# Lifecycle routes: the message each sends its formation, and the first stage it reports.
LIFECYCLE: dict[str, tuple[Any, str]] = {
    "start": (Start(), "spawning"),
    "stop": (Stop(), "stopping"),
    "restart": (Restart(), "stopping"),
    "rollback": (Rollback(), "spawning_staging"),
}


async def lifecycle(formation_id: str, action: str) -> Any:
    """`POST .../{action}` (a key of `LIFECYCLE`): the change relayed as a progress stream.
    `action` is not in the path: each route's rule gives it as a default (`blueprint`)."""
    message, first_stage = LIFECYCLE[action]
    ref = await formation_ref(formation_id, change=True)
    fleet = services().fleet
    return await render_operation(operations.relay(ref, message, first_stage, fleet, formation_id))


async def deploy() -> Any:
    body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    _check_bundle_type()
    expected = request.headers.get("X-Formation-ID") or None
    events = operations.deploy(services(), body, expected)
    return await render_operation(events, success_status=201)


async def list_formations() -> Any:
    items = await snapshots()
    return {"formations": items, "total": len(items)}


async def get_formation(formation_id: str) -> Any:
    return await formation_view(formation_id)


async def update(formation_id: str) -> Any:
    body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    _check_bundle_type()
    ref = await formation_ref(formation_id, change=True)
    events = operations.update(services(), ref, formation_id, body)
    return await render_operation(events)


async def cancel_update(formation_id: str) -> Any:
    """Waits as long as a delete: cancelling stops the staged process gracefully."""
    ref = await formation_ref(formation_id, change=True)
    return await ask(ref, CancelUpdate(), DELETE_TIMEOUT_S)


async def logs(formation_id: str) -> Any:
    return await logs_answer(formation_id)


async def download(formation_id: str) -> Any:
    """The current version as a zip (its runtime state too with `db=true`), built in a
    spooled temporary file (on disk past 8 MiB) and streamed from it."""
    with_state = bool_param("db", False)
    version, version_dir = await ask(await formation_ref(formation_id), CurrentVersion())
    archive = await trio.to_thread.run_sync(zip_version, version_dir, with_state)
    filename = f"{formation_id}-{version}.zip"
    response = await make_response(
        _archive_chunks(archive),
        200,
        {
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )
    response.timeout = None  # type: ignore[union-attr]
    return response


async def _archive_chunks(archive: IO[bytes]) -> AsyncIterator[bytes]:
    """The archive's bytes, closing it when the response body is done (or abandoned)."""
    with archive:
        while chunk := archive.read(DOWNLOAD_CHUNK):
            yield chunk


async def delete(formation_id: str) -> Any:
    return await ask(services().fleet, Delete(formation_id), DELETE_TIMEOUT_S)


async def formation_events(formation_id: str) -> Any:
    """The formation's timeline (`http.timeline`)."""
    return await events_answer(formation_id)


async def audit_log() -> Any:
    count = lines_param(100, 1, MAX_LOG_LINES)
    return {"entries": services().store.audit_tail(count)}


async def status() -> Any:
    items = await snapshots()
    ports = await ask(services().fleet, PortStatus())
    counts = {"total": len(items), "running": 0, "stopped": 0, "crashed": 0}
    for item in items:
        if item.get("status") in counts:
            counts[item["status"]] += 1
    return jsonify(
        {
            "server_id": services().server_id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - _started, 3),
            "formations": counts,
            "ports": {
                "range": ports.range,
                "allocated": ports.allocated,
                "available": ports.available,
            },
            # Proxied requests held while a formation came back, and retried ones.
            "proxy": services().routes.hold_summary(),
            **keeper_state(),
        }
    )


def blueprint() -> Blueprint:
    """`/rpc/*`, each request signed (`rpc_auth`) and audited."""
    bp = Blueprint("rpc", __name__)
    bp.before_request(rpc_auth.authenticate)
    bp.add_url_rule("/rpc/formations/deploy", "deploy", deploy, methods=["POST"])
    bp.add_url_rule("/rpc/formations", "deploy_alias", deploy, methods=["POST"])
    bp.get("/rpc/formations")(list_formations)
    bp.get("/rpc/formations/<formation_id>")(get_formation)
    for action in LIFECYCLE:
        bp.add_url_rule(
            f"/rpc/formations/<formation_id>/{action}",
            action,
            lifecycle,
            methods=["POST"],
            defaults={"action": action},
        )
    bp.put("/rpc/formations/<formation_id>")(update)
    bp.post("/rpc/formations/<formation_id>/cancel-update")(cancel_update)
    bp.get("/rpc/formations/<formation_id>/logs")(logs)
    bp.get("/rpc/formations/<formation_id>/download")(download)
    bp.get("/rpc/formations/<formation_id>/events")(formation_events)
    bp.delete("/rpc/formations/<formation_id>")(delete)
    bp.get("/rpc/server/logs")(audit_log)
    bp.get("/rpc/server/status")(status)
    return bp


MAX_LOG_LINES = 10_000
DOWNLOAD_CHUNK = 256 * 1024
FOLLOW_POLL_S = 0.25


def read_history(
    log_dir: Path, streams: tuple[str, ...], count: int, backups: int
) -> list[dict[str, Any]]:
    """The last `count` lines in all (not per stream), merged by the keeper's time, legacy
    lines (no time) first (`storage.formation_logs.tail`). Blocking: run in a thread."""
    return [line.as_json() for line in tail(log_dir, streams, count, backups)]


async def follow_logs(
    routes: RouteTable,
    formation_id: str,
    follower: LogFollower,
    history: list[dict[str, Any]],
) -> AsyncIterator[tuple[str, dict[str, Any]] | None]:
    """`event: log` for the history, then for each new line (with the time the keeper read it,
    from the file), until the client leaves or the formation is deleted; None asks for a
    heartbeat comment. Runs as a response body, outside the app context: everything it needs
    is passed in. `follower` began before the history was read: what it first finds that the
    history already gave is not given again."""
    for item in history:
        yield "log", item
    given = history
    quiet_since = trio.current_time()
    while routes.get(formation_id) is not None:
        await trio.sleep(FOLLOW_POLL_S)
        fresh = unseen(await trio.to_thread.run_sync(follower.read_new), given)
        given = []
        for item in fresh:
            yield "log", item
        if fresh:
            quiet_since = trio.current_time()
        elif trio.current_time() - quiet_since >= HEARTBEAT_S:
            quiet_since = trio.current_time()
            yield None


def unseen(fresh: list[LogLine], given: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`fresh` as answers, less those in `given`, each taken once: lines written between the
    follower's start and the history's read. Timed lines only: the keeper stamps a whole
    write with one time, so two equal ones come from the same write, both in the history or
    both not. A legacy line (no time) cannot be told from an equal one written later: it may
    come twice."""
    left = Counter(tuple(item.values()) for item in given if item["ts"] is not None)
    out = []
    for line in fresh:
        item = line.as_json()
        key = tuple(item.values())
        if line.ts is not None and left[key] > 0:
            left[key] -= 1
            continue
        out.append(item)
    return out


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
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-gtar",
        "application/zip",
        "application/x-zip-compressed",
        "application/octet-stream",
    }

"""Lifecycle operations as streams of events: the seed's progress stages, then the outcome.

The HTTP layer renders the same stream either as Server-Sent Events or, consumed to the end,
as one JSON answer; `fsup serve --deploy` consumes it too. Operations only talk to actors by
messages: `deploy` stages the bundle, then asks the fleet to create the formation.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.base import ActorError, ActorRef, ActorUnavailable, Progress
from actors.fleet import Create, Lookup
from actors.formation import Update
from supervisor.core.errors import FsupError
from supervisor.runtime.events import HEARTBEAT_S, EventBus
from supervisor.runtime.routing import RouteTable
from supervisor.storage import intake
from supervisor.storage.config import ServerConfig
from supervisor.storage.home import Home
from supervisor.storage.store import Store

# How long `gone` waits for the fleet to say what became of a formation.
LOOKUP_BOUND_S = 5.0


@dataclass(frozen=True)
class Event:
    """`kind` is `progress`, `complete` or `error` (the SSE event name)."""

    kind: str
    data: dict[str, Any]
    error: FsupError | None = field(default=None, compare=False)


@dataclass
class Services:
    """What the HTTP front end and the operations need: the root actor and the settings."""

    fleet: ActorRef
    home: Home
    config: ServerConfig
    routes: RouteTable
    store: Store  # for the audit trail; formations' state belongs to their actors
    bus: EventBus


def progress(stage: str, message: str, **extra: Any) -> Event:
    return Event("progress", {"stage": stage, "message": message, **extra})


def skipped(stage: str, why: str) -> Event:
    return progress(stage, why, skipped=True)


def failure(error: FsupError, stage: str) -> Event:
    stage = str(error.details.get("stage", stage))
    data = {"code": error.code, "message": error.message, "stage": stage, "details": error.details}
    return Event("error", data, error)


def as_fsup_error(exc: Exception) -> FsupError:
    if isinstance(exc, FsupError):
        return exc
    return FsupError("INTERNAL", f"the operation failed inside the supervisor: {exc}")


async def deploy(
    services: Services, body: bytes, expected_id: str | None = None
) -> AsyncIterator[Event | None]:
    """Deploy a new formation from a bundle: the seed's `Deploy (new)` stages in order."""
    async for event in _from_bundle(services, body, expected_id, services.fleet, "spawning", None):
        yield event


async def update(
    services: Services, ref: ActorRef, formation_id: str, body: bytes
) -> AsyncIterator[Event | None]:
    """Update a formation, blue-green: the seed's `Update (existing)` stages in order."""
    async for event in _from_bundle(
        services, body, formation_id, ref, "spawning_staging", formation_id
    ):
        yield event


async def _from_bundle(
    services: Services,
    body: bytes,
    expected_id: str | None,
    target: ActorRef,
    next_stage: str,
    update_of: str | None,
) -> AsyncIterator[Event | None]:
    """Stage and validate a bundle, then hand it to `target`: the fleet creates a formation
    from it, a formation actor updates itself with it."""
    stage = "extracting"
    staged_dir = None
    try:
        try:
            yield progress("extracting", f"Extracting bundle ({len(body)} bytes)")
            staged_dir = await intake.extract(body, services.home.staging, services.config.bundle)
            stage = "validating"
            yield progress("validating", f"Validating {intake.MANIFEST_NAME}")
            staged = await intake.validate(staged_dir, services.config.restart_defaults)
            if expected_id is not None and expected_id != staged.spec.id:
                said = "the URL" if update_of else "X-Formation-ID"
                raise FsupError(
                    "INVALID_FORMATION",
                    f"{said} says {expected_id!r} but formation.yaml says {staged.spec.id!r}",
                    {"field": "id"},
                )
            stage = "resolving_runtime"
            executable = intake.resolve_command(staged.spec, staged_dir, os.environ.get("PATH"))
            yield progress("resolving_runtime", f"Runtime: local process ({executable})")
        except FsupError as exc:
            yield failure(exc, stage)
            return
        yield skipped("downloading_sif", "Not needed: formations run as local processes")
        yield skipped("pulling_runner", "Not needed: formations run as local processes")
        message: Any = (
            Update(staged_dir, staged.spec, staged.manifest)
            if update_of
            else Create(staged.spec, staged_dir, staged.manifest)
        )
        fleet = services.fleet if update_of else None
        async for event in relay(target, message, next_stage, fleet, update_of):
            yield event
    finally:
        # Gone already when the fleet moved it into place; removed here on any other path.
        if staged_dir is not None:
            intake.discard(staged_dir)


async def relay(
    ref: ActorRef,
    message: Any,
    first_stage: str,
    fleet: ActorRef | None = None,
    formation_id: str | None = None,
) -> AsyncIterator[Event | None]:
    """Ask an actor and relay its progress, then its answer (or error, with the last stage).
    Start, stop and restart are exactly this; a deploy ends with it. After `HEARTBEAT_S`
    without progress it yields None: a stream sends a heartbeat comment for it. A formation's
    actor that ended before it took the request is explained by the `fleet` (`gone`)."""
    stage = first_stage
    try:
        with await ref.request(message) as call:
            while True:
                with trio.move_on_after(HEARTBEAT_S) as quiet:
                    item = await call.next()
                if quiet.cancelled_caught:
                    yield None
                    continue
                if not isinstance(item, Progress):
                    break
                stage = item.event.get("stage", stage)
                yield Event("progress", item.event)
            result = await call.result()
        yield Event("complete", result)
    except ActorUnavailable:
        # Its actor ended while the request was on its way: a formation deleted meanwhile
        # (its lookup came just before the delete), or fsup stopping. Not a bug: no 500.
        yield failure(await gone(fleet, formation_id), stage)
    except (FsupError, ActorError) as exc:
        yield failure(as_fsup_error(exc), stage)


async def gone(fleet: ActorRef | None, formation_id: str | None) -> FsupError:
    """Why a formation's actor had ended when a request reached it, as the fleet sees it now:
    the formation is gone (404 `FORMATION_NOT_FOUND`) or being deleted (409 `FORMATION_BUSY`);
    otherwise fsup is stopping (503)."""
    name = f"formation '{formation_id}'" if formation_id else "the formation"
    unavailable = FsupError(
        "FORMATION_UNAVAILABLE",
        f"{name} ended before it took the request (fsup is stopping); retry once it is back",
    )
    if fleet is None or formation_id is None:
        return unavailable
    try:
        with trio.fail_after(LOOKUP_BOUND_S):
            await fleet.ask(Lookup(formation_id, change=True))
    except FsupError as exc:
        return exc  # FORMATION_NOT_FOUND, or FORMATION_BUSY (being deleted)
    except (ActorError, trio.TooSlowError):
        pass  # the fleet itself is stopping, or too busy to say
    return unavailable


async def outcome(events: AsyncIterator[Event | None]) -> Event:
    """Run an operation to its end and return its last event (complete or error)."""
    last = None
    async for event in events:
        if event is not None:
            last = event
    assert last is not None and last.kind in ("complete", "error")
    return last

"""A search registry in-process, for the tests of searches: a real SQLite store in a folder,
an EventBus, a fake fleet whose formations answer `SearchTarget` with log folders there, and
formations' `search.path` answered by an httpx MockTransport. Run it on trio's MockClock."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from actors.base import Actor, ActorRef, Reply, spawn
from actors.fleet import ListFormations
from actors.formation import SearchTarget
from actors.search import SearchesActor
from actors.search_run import SearchContext
from actors.supervision import Intensity, Supervisor
from supervisor.core.errors import FsupError
from supervisor.runtime.events import BusEvent, EventBus, Subscription
from supervisor.storage.store import SearchStore, Store

PEER_PORT, BROKEN_PORT = 8123, 8124


# Virtual time jumps while a worker thread runs (the fleet installs and removes files, a run
# scans logs in threads), so a `trio.fail_after` on the MockClock could expire while nothing is
# late. A hang is caught in real time instead, by a thread that waits out REAL_LIMIT_S.
REAL_LIMIT_S = 30.0


async def real_time_limit(done: threading.Event) -> None:
    if not await trio.to_thread.run_sync(done.wait, REAL_LIMIT_S):
        raise AssertionError(f"test still waiting after {REAL_LIMIT_S:g} s of real time")


class Peer(Actor):
    """A formation as a run sees it: where its logs are and whether it answers searches."""

    def __init__(self, target: dict[str, Any] | None) -> None:
        super().__init__()
        self.target = target

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        assert isinstance(message, SearchTarget), message
        if self.target is None:
            raise FsupError("FORMATION_NOT_FOUND", "deleted meanwhile")
        return self.target


class Fleet(Actor):
    name = "fleet"

    def __init__(self) -> None:
        super().__init__()
        self.peers: dict[str, ActorRef] = {}
        self.open = trio.Event()  # a test that replaces it holds every run in its first step
        self.open.set()

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        assert isinstance(message, ListFormations), message
        await self.open.wait()
        return list(self.peers.items())


def answer_searches(request: httpx.Request) -> httpx.Response:
    """The formations' `search.path`: one answers two hits (one malformed), one fails."""
    if request.url.port == BROKEN_PORT:
        return httpx.Response(500, text="boom")
    assert request.url.path == "/search" and request.url.params["q"] == "disk full"
    return httpx.Response(
        200,
        json={
            "hits": [
                {"id": "doc-1", "title": "Disk full runbook", "score": 0.9, "size": 120},
                {"title": "no id, dropped"},
            ]
        },
    )


@dataclass
class World:
    tmp: Path
    store: Store
    bus: EventBus
    fleet: Fleet
    searches: ActorRef
    nursery: trio.Nursery
    made: list[SearchesActor]  # each incarnation of the registry, the live one last

    async def add_formation(
        self, formation_id: str, logs: dict[str, str], port: int | None = None, gone: bool = False
    ) -> Path:
        log_dir = self.tmp / "logs" / formation_id
        log_dir.mkdir(parents=True)
        for name, text in logs.items():
            (log_dir / name).write_text(text)
        target = {
            "formation_id": formation_id,
            "port": port,
            "log_dir": log_dir,
            "search_path": "/search" if port else None,
        }
        self.fleet.peers[formation_id] = await spawn(self.nursery, Peer(None if gone else target))
        return log_dir


@asynccontextmanager
async def world_of(tmp_path: Path) -> AsyncIterator[World]:
    store = Store(tmp_path / "state.db")
    bus = EventBus()
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(answer_searches)) as http,
        trio.open_nursery() as nursery,
    ):
        done = threading.Event()
        nursery.start_soon(real_time_limit, done)
        fleet = Fleet()
        fleet_ref = await spawn(nursery, fleet)
        ctx = SearchContext(SearchStore(store), bus, fleet_ref, http, log_backups=3)
        roots = Supervisor(nursery, Intensity(escalate=False))
        made: list[SearchesActor] = []

        def registry() -> SearchesActor:
            made.append(SearchesActor(ctx))
            return made[-1]

        searches = await roots.start("searches", registry)
        try:
            yield World(tmp_path, store, bus, fleet, searches, nursery, made)
        finally:
            done.set()
            nursery.cancel_scope.cancel()
    store.close()


async def ask(ref: ActorRef, message: Any) -> Any:
    return await ref.ask(message)


async def expect(subscription: Subscription, type_: str, search_id: str, **data: Any) -> BusEvent:
    async for event in subscription.receive:
        if (event.type, event.search_id) == (type_, search_id) and all(
            event.data.get(k) == v for k, v in data.items()
        ):
            return event
    raise AssertionError(f"the bus closed before {type_} {data}")

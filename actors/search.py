"""Searches: the registry actor, `SearchesActor`, and the messages it answers.

A search is a persistent keyword query over the supervised fleet; its peers are the
formations. `SearchesActor` owns the searches (create, patch, delete, start, stop), answers
for their results, and supervises one `SearchRunActor` per run (`actors/search_run.py`), which
does the scanning.

A run writes its telemetry to the store as it goes and tells the registry only when it ends,
with `tell`; the registry never waits on a run, so neither can block the other.

States (`supervisor.core.search_states`): a search is `running` exactly while `runs` holds a
run of it, and takes the state its run ended in when it ends. The store checks every move.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import trio

from supervisor.core.errors import FsupError
from supervisor.core.search_states import AFTER_RUN, RunState, SearchState

from .base import Actor, ActorError, ActorRef, Reply
from .search_run import RunEnded, SearchContext, SearchRunActor, StopRun, Telemetry
from .supervision import Supervisor

TOP_RESULTS = 10
ACTIVITY = 20


# -- registry messages ----------------------------------------------------------------------


@dataclass(frozen=True)
class CreateSearch:
    keyword: str
    mode: str = "full"
    autostart: bool = False


@dataclass(frozen=True)
class ListSearches:
    pass


@dataclass(frozen=True)
class GetSearch:
    search_id: str


@dataclass(frozen=True)
class PatchSearch:
    search_id: str
    keyword: str | None = None
    pinned: bool | None = None


@dataclass(frozen=True)
class DeleteSearch:
    search_id: str


@dataclass(frozen=True)
class StartSearch:
    search_id: str
    mode: str | None = None
    rerun: bool = False


@dataclass(frozen=True)
class StopSearch:
    search_id: str


@dataclass(frozen=True)
class SearchResults:
    search_id: str
    limit: int = 50
    offset: int = 0
    sort: str = "sources"
    q: str | None = None


@dataclass(frozen=True)
class SearchResult:
    search_id: str
    result_id: str


@dataclass(frozen=True)
class ExportSearch:
    search_id: str


class SearchesActor(Actor):
    name = "searches"

    def __init__(self, ctx: SearchContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.runs: dict[str, tuple[str, ActorRef]] = {}  # search id -> (run id, ref)
        # The supervisor of the search runs (made in the registry's nursery when it starts).
        # Public: what it keeps per run must be gone once a run ends (issue 17), and the
        # tests look at it for that.
        self.run_supervisor: Supervisor | None = None

    async def on_start(self) -> None:
        assert self.nursery is not None
        self.run_supervisor = Supervisor(self.nursery)
        self._settle_the_store()

    def _settle_the_store(self) -> None:
        """No run of a previous registry is alive any more (they ran in its nursery). A run
        still marked running was interrupted by fsup's stop: it is stopped. A search still
        marked running takes the state its run ended in (its `RunEnded` was lost if fsup
        stopped between the run's end and the registry's turn). A search resumes only when
        asked."""
        store = self.ctx.store
        for run_id, search_id in store.interrupted_runs():
            last = store.last_run(search_id)
            store.end_run(run_id, RunState.STOPPED, last["telemetry"] if last else {})
        for search in store.searches():
            if search["state"] is SearchState.RUNNING:
                last = store.last_run(search["id"])
                ended = RunState.STOPPED if last is None else last["state"]
                store.move_search(search["id"], AFTER_RUN[ended], active_run_id=None)

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        match message:
            case CreateSearch():
                return await self._create(message)
            case ListSearches():
                return [self._list_item(s) for s in self.ctx.store.searches()]
            case GetSearch(search_id=sid):
                return self.detail(sid)
            case PatchSearch():
                return self._patch(message)
            case DeleteSearch(search_id=sid):
                self._search(sid)
                await self._stop_run(sid)
                self.ctx.store.delete_search(sid)
                self.ctx.bus.publish("search_state_changed", {"state": SearchState.DELETED}, sid)
                self.ctx.bus.forget_search(sid)  # its progress snapshots: nothing kept
                return {"id": sid, "deleted": True}
            case StartSearch():
                return await self._start(message)
            case SearchResults(search_id=sid):
                self._search(sid)
                items, total = self.ctx.store.results(
                    sid, message.limit, message.offset, message.sort, message.q
                )
                return {
                    "items": items,
                    "total": total,
                    "limit": message.limit,
                    "offset": message.offset,
                }
            case SearchResult(search_id=sid, result_id=rid):
                self._search(sid)
                result = self.ctx.store.result(sid, rid)
                if result is None:
                    raise FsupError(
                        "RESULT_NOT_FOUND",
                        f"search '{sid}' has no result '{rid}'",
                        {"search_id": sid, "result_id": rid},
                    )
                return result
            case ExportSearch(search_id=sid):
                return self.export(sid)
            case StopSearch(search_id=sid):
                self._search(sid)
                await self._stop_run(sid)
                return self.detail(sid)
            case RunEnded(search_id=sid, run_id=run_id, state=state):
                current = self.runs.get(sid)
                if current is not None and current[0] == run_id:
                    del self.runs[sid]
                    if self.ctx.store.search(sid) is not None:
                        self._set_state(sid, AFTER_RUN[state], active_run_id=None)
                return None
        raise FsupError("INVALID_REQUEST", f"unknown message {type(message).__name__}")

    def _search(self, search_id: str) -> dict[str, Any]:
        search = self.ctx.store.search(search_id)
        if search is None:
            raise FsupError(
                "SEARCH_NOT_FOUND", f"search '{search_id}' does not exist", {"search_id": search_id}
            )
        return search

    async def _create(self, message: CreateSearch) -> Any:
        search_id = uuid.uuid4().hex[:12]
        self.ctx.store.insert_search(search_id, message.keyword, message.mode)
        self.ctx.bus.publish(
            "search_created", {"keyword": message.keyword, "mode": message.mode}, search_id
        )
        if message.autostart:
            return await self._start(StartSearch(search_id, message.mode))
        return self.detail(search_id)

    def _patch(self, message: PatchSearch) -> Any:
        self._search(message.search_id)
        fields: dict[str, Any] = {}
        if message.keyword is not None:
            fields["keyword"] = message.keyword
        if message.pinned is not None:
            fields["pinned"] = int(message.pinned)
        if fields:
            self.ctx.store.update_search(message.search_id, **fields)
            changed = {"keyword": message.keyword, "pinned": message.pinned}
            self.ctx.bus.publish(
                "search_updated",
                {k: v for k, v in changed.items() if v is not None},
                message.search_id,
            )
        return self.detail(message.search_id)

    async def _start(self, message: StartSearch) -> Any:
        search = self._search(message.search_id)
        if message.search_id in self.runs and not message.rerun:
            return self.detail(message.search_id)  # idempotent: already running
        await self._stop_run(message.search_id)
        if message.rerun:
            self.ctx.store.clear_results(message.search_id)
        mode = message.mode or search["mode"]
        run_id = uuid.uuid4().hex[:12]
        self.ctx.store.insert_run(run_id, message.search_id, mode)
        self._set_state(message.search_id, SearchState.RUNNING, active_run_id=run_id, mode=mode)
        assert self.run_supervisor is not None and self.ref is not None
        registry = self.ref

        def incarnation() -> SearchRunActor:
            return SearchRunActor(
                self.ctx, registry, message.search_id, run_id, search["keyword"], mode
            )

        ref = await self.run_supervisor.start(f"search-run:{run_id}", incarnation)
        self.runs[message.search_id] = (run_id, ref)
        return self.detail(message.search_id)

    async def _stop_run(self, search_id: str) -> None:
        """Stop a running search (idempotent). The run ends itself; we only tell it."""
        current = self.runs.pop(search_id, None)
        if current is None:
            return
        run_id, ref = current
        try:
            ref.tell_nowait(StopRun())
        except (ActorError, trio.WouldBlock):
            pass
        ended = self._stop_in_store(search_id, run_id)
        self._set_state(search_id, AFTER_RUN[ended], active_run_id=None)

    def _stop_in_store(self, search_id: str, run_id: str) -> RunState:
        """Mark the run stopped now, so the answer says so (the run, told to stop, writes its
        last snapshot when it gets there); unless it ended already, its `RunEnded` still on
        the way: then it keeps the state it ended in. The state the run is in, returned."""
        store = self.ctx.store
        state = store.run_state(run_id)
        if state is not RunState.RUNNING:
            return state or RunState.STOPPED
        last = store.last_run(search_id)
        store.end_run(run_id, RunState.STOPPED, last["telemetry"] if last else {})
        return RunState.STOPPED

    def _set_state(self, search_id: str, state: SearchState, **fields: Any) -> None:
        self.ctx.store.move_search(search_id, state, **fields)
        self.ctx.bus.publish("search_state_changed", {"state": state, **fields}, search_id)

    def _list_item(self, search: dict[str, Any]) -> dict[str, Any]:
        last = self.ctx.store.last_run(search["id"]) or {}
        telemetry = last.get("telemetry", {})
        stats = telemetry.get("telemetry", {})
        _, total = self.ctx.store.results(search["id"], 1, 0, "recent", None)
        return {
            "id": search["id"],
            "keyword": search["keyword"],
            "state": search["state"],
            "updated_at": search["updated_at"],
            "pinned": search["pinned"],
            "summary": {
                "hits": total,
                "peers_contacted": stats.get("peers_done", 0),
                "progress": telemetry.get("progress", {}).get("percent", 0.0),
                "errors": stats.get("drops", 0),
            },
        }

    def detail(self, search_id: str) -> dict[str, Any]:
        """SearchDetail: the search, its telemetry and progress, results, recent activity."""
        search = self._search(search_id)
        last = self.ctx.store.last_run(search_id)
        snapshot = last["telemetry"] if last else {}
        top, total = self.ctx.store.results(search_id, TOP_RESULTS, 0, "sources", None)
        activity = [
            {"id": e.id, "type": e.type, "ts": e.ts}
            for e in self.ctx.bus.history(limit=2000)
            if e.search_id == search_id
        ][-ACTIVITY:]
        last_summary = None
        if last is not None:
            last_summary = {
                "run_id": last["id"],
                "state": last["state"],
                "mode": last["mode"],
                "started_at": last["started_at"],
                "finished_at": last["finished_at"],
            }
        return {
            "search": {**search, "last_run_summary": last_summary},
            "telemetry": snapshot.get("telemetry", Telemetry().to_json()["telemetry"]),
            "progress": snapshot.get("progress", {"phase": search["state"], "percent": 0.0}),
            "results": {"count": total, "top": top},
            "activity": activity,
        }

    def export(self, search_id: str) -> dict[str, Any]:
        items, total = self.ctx.store.results(search_id, 1_000_000, 0, "recent", None)
        return {"search": self._search(search_id), "results": items, "total": total}

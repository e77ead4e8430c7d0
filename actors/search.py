"""Searches: a registry actor, and one SearchRunActor per run.

A search is a persistent keyword query over the supervised fleet; its peers are the
formations. `SearchesActor` owns the searches (create, patch, delete, start, stop) and
supervises the runs; each `SearchRunActor` fans out to the formations with bounded concurrency
and a per-peer timeout, scans each one's logs (rotated files too), asks each that declares
`search.path`, and records deduplicated hits. In `live` mode it then keeps following new log
lines and formations that appear, until stopped.

A run writes its telemetry to the store as it goes and tells the registry only when it ends,
with `tell`; the registry never waits on a run, so neither can block the other.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from supervisor.errors import FsupError
from supervisor.events import EventBus
from supervisor.formation_logs import STREAMS, Follower, stream_path
from supervisor.hmac_auth import rfc3339_now
from supervisor.search_match import log_hit, matches, peer_hit, words_of
from supervisor.store import SearchStore

from .base import Actor, ActorError, ActorRef, Reply
from .fleet import ListFormations
from .formation import SearchTarget
from .supervision import Supervisor

log = logging.getLogger("fsup.search")

MAX_CONCURRENT_PEERS = 8
PEER_TIMEOUT_S = 5.0
LIVE_POLL_S = 0.5
LIVE_RESCAN_S = 2.0
MAX_HITS_PER_PEER = 1000
MAX_PEER_BODY = 1024 * 1024
TOP_RESULTS = 10
ACTIVITY = 20


@dataclass
class SearchContext:
    store: SearchStore
    bus: EventBus
    fleet: ActorRef
    http: httpx.AsyncClient
    log_backups: int = 3


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


@dataclass(frozen=True)
class RunEnded:
    search_id: str
    run_id: str
    state: str


# -- run messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StopRun:
    pass


@dataclass(frozen=True)
class _PeerReport:
    formation_id: str
    hits: list[dict[str, Any]]
    requests: int = 0
    responses: int = 0
    drops: int = 0
    done: bool = True


@dataclass(frozen=True)
class _NewPeers:
    count: int


@dataclass(frozen=True)
class _ScanFinished:
    pass


@dataclass
class Telemetry:
    peers: int = 0
    peers_done: int = 0
    requests: int = 0
    responses: int = 0
    drops: int = 0
    hits: int = 0
    started: float = field(default_factory=time.monotonic)
    started_at: str = ""
    phase: str = "scanning"

    def to_json(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        percent = 100.0 if self.peers == 0 else round(100.0 * self.peers_done / self.peers, 1)
        return {
            "telemetry": {
                "peers": self.peers, "peers_done": self.peers_done, "requests": self.requests,
                "responses": self.responses, "drops": self.drops, "hits": self.hits,
                "rates": {"requests_per_s": round(self.requests / elapsed, 3),
                          "hits_per_s": round(self.hits / elapsed, 3)},
            },
            "progress": {"phase": self.phase, "percent": percent, "started_at": self.started_at},
        }


class SearchRunActor(Actor):
    def __init__(
        self, ctx: SearchContext, registry: ActorRef, search_id: str, run_id: str, keyword: str,
        mode: str,
    ) -> None:
        super().__init__()
        self.name = f"search-run:{run_id}"
        self.ctx = ctx
        self.registry = registry
        self.search_id = search_id
        self.run_id = run_id
        self.words = words_of(keyword)
        self.mode = mode
        self.telemetry = Telemetry(started_at=rfc3339_now())
        self._scan_scope = trio.CancelScope()
        self._ended = False

    async def on_start(self) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(self._run)

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        match message:
            case StopRun():
                await self._end("stopped")
                return {"run_id": self.run_id, "state": "stopped"}
            case _PeerReport():
                self._on_report(message)
                return None
            case _NewPeers(count=count):
                self.telemetry.peers += count
                return None
            case _ScanFinished():
                if self.mode == "live":
                    self.telemetry.phase = "live"
                    self._publish_progress()
                else:
                    await self._end("complete")
                return None
        raise FsupError("INVALID_REQUEST", f"unknown message {type(message).__name__}")

    def _on_report(self, report: _PeerReport) -> None:
        t = self.telemetry
        t.requests += report.requests
        t.responses += report.responses
        t.drops += report.drops
        t.peers_done += 1 if report.done else 0
        for hit in report.hits:
            if self.ctx.store.upsert_result(self.search_id, hit):
                t.hits += 1
                self.ctx.bus.publish("search_hit_found", hit, self.search_id)
        self._publish_progress()

    def _publish_progress(self) -> None:
        snapshot = self.telemetry.to_json()
        self.ctx.store.update_run(self.run_id, "running", snapshot)
        self.ctx.bus.publish("search_progress", snapshot["progress"], self.search_id)
        self.ctx.bus.publish("search_stats", snapshot["telemetry"], self.search_id)

    async def _end(self, state: str) -> None:
        if self._ended:
            return
        self._ended = True
        self._scan_scope.cancel(reason=f"run {state}")
        self.telemetry.phase = state
        snapshot = self.telemetry.to_json()
        self.ctx.store.update_run(self.run_id, state, snapshot, finished=True)
        if state == "complete":
            self.ctx.bus.publish("search_completed", snapshot, self.search_id)
        self.stop_after_this_message()
        try:
            await self.registry.tell(RunEnded(self.search_id, self.run_id, state))
        except ActorError:
            pass

    # -- the scan (background; reports through the mailbox) -------------------------------

    async def _run(self) -> None:
        with self._scan_scope:
            targets = await self._targets()
            await self._post(_NewPeers(len(targets)))
            limiter = trio.CapacityLimiter(MAX_CONCURRENT_PEERS)
            async with trio.open_nursery() as nursery:
                for target in targets:
                    nursery.start_soon(self._scan_peer, target, limiter)
            await self._post(_ScanFinished())
            if self.mode == "live":
                await self._follow({t["formation_id"] for t in targets})

    async def _targets(self) -> list[dict[str, Any]]:
        pairs = await self.ctx.fleet.ask(ListFormations())
        targets = []
        for _, ref in pairs:
            try:
                with trio.fail_after(PEER_TIMEOUT_S):
                    targets.append(await ref.ask(SearchTarget()))
            except (ActorError, FsupError, trio.TooSlowError):
                continue
        return targets

    async def _scan_peer(self, target: dict[str, Any], limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            formation_id = target["formation_id"]
            hits = await trio.to_thread.run_sync(
                scan_logs, target["log_dir"], self.words, formation_id, self.ctx.log_backups
            )
            report = _PeerReport(formation_id, hits)
            if target["search_path"] and target["port"]:
                peer_hits, drops = await self._ask_peer(target)
                report = _PeerReport(formation_id, hits + peer_hits, requests=1,
                                     responses=1 - drops, drops=drops)
            await self._post(report)

    async def _ask_peer(self, target: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        url = f"http://127.0.0.1:{target['port']}{target['search_path']}"
        try:
            with trio.fail_after(PEER_TIMEOUT_S):
                response = await self.ctx.http.get(url, params={"q": " ".join(self.words)})
            if response.status_code != 200 or len(response.content) > MAX_PEER_BODY:
                return [], 1
            body = response.json()
            raw = body.get("hits") if isinstance(body, dict) else None
            if not isinstance(raw, list):
                return [], 1
        except (httpx.HTTPError, ValueError, trio.TooSlowError):
            return [], 1
        hits = [h for h in (peer_hit(item, target["formation_id"]) for item in raw) if h]
        return hits[:MAX_HITS_PER_PEER], 0

    async def _follow(self, known: set[str]) -> None:
        """Live mode: new log lines of every formation, and formations that appear."""
        followers: dict[str, list[Follower]] = {}
        last_rescan = trio.current_time()
        for target in await self._targets():
            followers[target["formation_id"]] = self._followers(target["log_dir"])
        while True:
            await trio.sleep(LIVE_POLL_S)
            for formation_id, streams in followers.items():
                lines = [line for f in streams for line in f.read_new()]
                hits = [log_hit(line, formation_id) for line in lines if matches(line, self.words)]
                if hits:
                    await self._post(_PeerReport(formation_id, hits, done=False))
            if trio.current_time() - last_rescan >= LIVE_RESCAN_S:
                last_rescan = trio.current_time()
                for target in await self._targets():
                    if target["formation_id"] not in known:
                        known.add(target["formation_id"])
                        await self._post(_NewPeers(1))
                        followers[target["formation_id"]] = self._followers(target["log_dir"])
                        await self._scan_peer(target, trio.CapacityLimiter(1))

    @staticmethod
    def _followers(log_dir: Path) -> list[Follower]:
        return [Follower(log_dir, stream) for stream in STREAMS]

    async def _post(self, message: Any) -> None:
        assert self.ref is not None
        await self.ref.tell(message)


def scan_logs(log_dir: Path, words: list[str], formation_id: str, backups: int) -> list[dict[str, Any]]:
    """Hits in a formation's logs, rotated files included (blocking: run in a thread)."""
    hits: dict[str, dict[str, Any]] = {}
    for stream in STREAMS:
        for backup in range(backups, -1, -1):
            path = stream_path(log_dir, stream, backup)
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    for line in handle:
                        if matches(line, words):
                            hit = log_hit(line, formation_id)
                            hits.setdefault(hit["result_id"], hit)
                            if len(hits) >= MAX_HITS_PER_PEER:
                                return list(hits.values())
            except FileNotFoundError:
                continue
    return list(hits.values())


class SearchesActor(Actor):
    name = "searches"

    def __init__(self, ctx: SearchContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.runs: dict[str, tuple[str, ActorRef]] = {}  # search id -> (run id, ref)
        self._supervisor: Supervisor | None = None

    async def on_start(self) -> None:
        assert self.nursery is not None
        self._supervisor = Supervisor(self.nursery)
        # Runs that fsup's stop interrupted are over: a search resumes only when asked.
        for run_id, search_id in self.ctx.store.interrupted_runs():
            last = self.ctx.store.last_run(search_id)
            telemetry = last["telemetry"] if last else {}
            self.ctx.store.update_run(run_id, "stopped", telemetry, finished=True)
            self.ctx.store.update_search(search_id, state="stopped", active_run_id=None)

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
                self.ctx.bus.publish("search_state_changed", {"state": "deleted"}, sid)
                return {"id": sid, "deleted": True}
            case StartSearch():
                return await self._start(message)
            case SearchResults(search_id=sid):
                self._search(sid)
                items, total = self.ctx.store.results(
                    sid, message.limit, message.offset, message.sort, message.q
                )
                return {"items": items, "total": total, "limit": message.limit,
                        "offset": message.offset}
            case SearchResult(search_id=sid, result_id=rid):
                self._search(sid)
                result = self.ctx.store.result(sid, rid)
                if result is None:
                    raise FsupError("RESULT_NOT_FOUND", f"search '{sid}' has no result '{rid}'",
                                    {"search_id": sid, "result_id": rid})
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
                        self._set_state(sid, state, active_run_id=None)
                return None
        raise FsupError("INVALID_REQUEST", f"unknown message {type(message).__name__}")

    def _search(self, search_id: str) -> dict[str, Any]:
        search = self.ctx.store.search(search_id)
        if search is None:
            raise FsupError("SEARCH_NOT_FOUND", f"search '{search_id}' does not exist",
                            {"search_id": search_id})
        return search

    async def _create(self, message: CreateSearch) -> Any:
        search_id = uuid.uuid4().hex[:12]
        self.ctx.store.insert_search(search_id, message.keyword, message.mode)
        self.ctx.bus.publish("search_created", {"keyword": message.keyword,
                                                "mode": message.mode}, search_id)
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
                "search_updated", {k: v for k, v in changed.items() if v is not None},
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
        self._set_state(message.search_id, "running", active_run_id=run_id, mode=mode)
        assert self._supervisor is not None and self.ref is not None
        registry = self.ref

        def incarnation() -> SearchRunActor:
            return SearchRunActor(self.ctx, registry, message.search_id, run_id,
                                  search["keyword"], mode)

        ref = await self._supervisor.start(f"search-run:{run_id}", incarnation)
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
        last = self.ctx.store.last_run(search_id)
        self.ctx.store.update_run(run_id, "stopped", last["telemetry"] if last else {},
                                  finished=True)
        self._set_state(search_id, "stopped", active_run_id=None)

    def _set_state(self, search_id: str, state: str, **fields: Any) -> None:
        self.ctx.store.update_search(search_id, state=state, **fields)
        self.ctx.bus.publish("search_state_changed", {"state": state, **fields}, search_id)

    def _list_item(self, search: dict[str, Any]) -> dict[str, Any]:
        last = self.ctx.store.last_run(search["id"]) or {}
        telemetry = last.get("telemetry", {})
        stats = telemetry.get("telemetry", {})
        _, total = self.ctx.store.results(search["id"], 1, 0, "recent", None)
        return {
            "id": search["id"], "keyword": search["keyword"], "state": search["state"],
            "updated_at": search["updated_at"], "pinned": search["pinned"],
            "summary": {
                "hits": total, "peers_contacted": stats.get("peers_done", 0),
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
            for e in self.ctx.bus.history(limit=2000) if e.search_id == search_id
        ][-ACTIVITY:]
        last_summary = None
        if last is not None:
            last_summary = {"run_id": last["id"], "state": last["state"], "mode": last["mode"],
                            "started_at": last["started_at"], "finished_at": last["finished_at"]}
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


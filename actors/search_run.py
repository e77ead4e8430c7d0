"""One run of a search: `SearchRunActor`, its telemetry, and the scan of a formation's logs.

A run fans out to the formations with bounded concurrency and a per-peer timeout, scans each
one's logs (rotated files too), asks each that declares `search.path`, and records
deduplicated hits. In `live` mode it then keeps following new log lines and formations that
appear, until stopped. It is its own module because it is its own actor, with its own messages
and lifetime: the registry (`actors/search.py`) starts and stops runs and reads what they
wrote, but never reaches into one.

A run writes its telemetry to the store as it goes and tells the registry only when it ends,
with `tell` (`RunEnded`); the registry never waits on a run, so neither can block the other.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from supervisor.core.cri import STREAMS, parse
from supervisor.core.errors import FsupError
from supervisor.core.search_match import log_hit, matches, matching_lines, peer_hit, words_of
from supervisor.core.search_states import RunState
from supervisor.core.timestamps import rfc3339_now
from supervisor.runtime.events import EventBus
from supervisor.storage.log_files import LogLine, stream_path, version_path, versions_in
from supervisor.storage.log_follow import LogFollower
from supervisor.storage.store import SearchStore

from .base import Actor, ActorError, ActorRef, Reply
from .fleet import ListFormations
from .formation import SearchTarget

log = logging.getLogger("fsup.search")

MAX_CONCURRENT_PEERS = 8
PEER_TIMEOUT_S = 5.0
LIVE_POLL_S = 0.5
LIVE_RESCAN_S = 2.0
MAX_HITS_PER_PEER = 1000
# Log bytes read at a time by a scan (a thread per formation, at most a few at once).
SCAN_CHUNK = 1024 * 1024  # measured: 940 MiB/s at 1 MiB, 640 at 4 MiB (cache-sized)
MAX_PEER_BODY = 1024 * 1024
MIN_READ = 64 * 1024
# A CRI line's time, stream and tag (`supervisor.core.cri`), and what its time is made of.
CRI_PREFIX = re.compile(rb"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z std(?:out|err) [FP] ", re.M)
TIME_CHARS = frozenset("0123456789-:.tzfp")


@dataclass
class SearchContext:
    """What the registry and its runs share: the store they write, the bus they publish on,
    the fleet they search and the HTTP client that asks the formations."""

    store: SearchStore
    bus: EventBus
    fleet: ActorRef
    http: httpx.AsyncClient
    log_backups: int = 3


@dataclass(frozen=True)
class RunEnded:
    """Told by a run to its registry when it ends (complete or stopped), never asked: the run
    must not wait on the registry, which may be waiting to stop it."""

    search_id: str
    run_id: str
    state: RunState


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
                "peers": self.peers,
                "peers_done": self.peers_done,
                "requests": self.requests,
                "responses": self.responses,
                "drops": self.drops,
                "hits": self.hits,
                "rates": {
                    "requests_per_s": round(self.requests / elapsed, 3),
                    "hits_per_s": round(self.hits / elapsed, 3),
                },
            },
            "progress": {"phase": self.phase, "percent": percent, "started_at": self.started_at},
        }


class SearchRunActor(Actor):
    def __init__(
        self,
        ctx: SearchContext,
        registry: ActorRef,
        search_id: str,
        run_id: str,
        keyword: str,
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
                await self._end(RunState.STOPPED)
                return {"run_id": self.run_id, "state": RunState.STOPPED}
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
                    await self._end(RunState.COMPLETE)
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
        self.ctx.store.record_progress(self.run_id, snapshot)
        self.ctx.bus.publish("search_progress", snapshot["progress"], self.search_id)
        self.ctx.bus.publish("search_stats", snapshot["telemetry"], self.search_id)

    async def _end(self, state: RunState) -> None:
        if self._ended:
            return
        self._ended = True
        stored = self.ctx.store.run_state(self.run_id)
        if stored is not None and stored is not RunState.RUNNING:
            state = stored  # the registry stopped it first, its `StopRun` still on the way
        self._scan_scope.cancel(reason=f"run {state}")
        self.telemetry.phase = state.value
        snapshot = self.telemetry.to_json()
        self.ctx.store.end_run(self.run_id, state, snapshot)
        if state is RunState.COMPLETE:
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
            # A live search follows from the end of its scan (not before: the formations'
            # answers to its own questions are logged with its words in them), and says it is
            # live only once it follows, so a line written after that is never missed.
            if self.mode != "live":
                await self._post(_ScanFinished())
                return
            followers = await trio.to_thread.run_sync(open_followers, targets)
            await self._post(_ScanFinished())
            await self._follow({t["formation_id"] for t in targets}, followers)

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
                report = _PeerReport(
                    formation_id, hits + peer_hits, requests=1, responses=1 - drops, drops=drops
                )
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

    async def _follow(self, known: set[str], followers: dict[str, LogFollower]) -> None:
        """Live mode: new log lines of every formation, and formations that appear."""
        last_rescan = trio.current_time()
        while True:
            await trio.sleep(LIVE_POLL_S)
            # Every formation's new lines read and parsed in one worker thread, off the loop.
            fresh = await trio.to_thread.run_sync(read_all_new, followers)
            for formation_id, lines in fresh.items():
                hits = [
                    log_hit(line.text, formation_id)
                    for line in lines
                    if matches(line.text, self.words)
                ]
                if hits:
                    await self._post(_PeerReport(formation_id, hits, done=False))
            if trio.current_time() - last_rescan >= LIVE_RESCAN_S:
                last_rescan = trio.current_time()
                for target in await self._targets():
                    if target["formation_id"] not in known:
                        known.add(target["formation_id"])
                        await self._post(_NewPeers(1))
                        followers[target["formation_id"]] = await trio.to_thread.run_sync(
                            LogFollower, target["log_dir"]
                        )
                        await self._scan_peer(target, trio.CapacityLimiter(1))

    async def _post(self, message: Any) -> None:
        assert self.ref is not None
        await self.ref.tell(message)


def open_followers(targets: list[dict[str, Any]]) -> dict[str, LogFollower]:
    """A follower of each target's logs, from their end now (blocking: run in a thread)."""
    return {target["formation_id"]: LogFollower(target["log_dir"]) for target in targets}


def read_all_new(followers: dict[str, LogFollower]) -> dict[str, list[LogLine]]:
    """What each follower has new (the live mode's poll, in a worker thread)."""
    return {formation_id: follower.read_new() for formation_id, follower in followers.items()}


def scan_logs(
    log_dir: Path, words: list[str], formation_id: str, backups: int
) -> list[dict[str, Any]]:
    """Hits in a formation's logs, rotated files included (blocking: run in a thread): each
    version's CRI files (the text of a line only, never its time or stream), then the legacy
    files of an older fsup's children."""
    hits: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()  # a line logged again is the same hit: hashed once
    files = [
        (version_path(log_dir, version, backup), True)
        for version in versions_in(log_dir)
        for backup in range(backups, -1, -1)
    ]
    files += [
        (stream_path(log_dir, stream, backup), False)
        for stream in STREAMS
        for backup in range(backups, -1, -1)
    ]
    for path, cri in files:
        try:
            for chunk in whole_line_chunks(path):
                for line in (
                    matching_cri_texts(chunk, words) if cri else matching_lines(chunk, words)
                ):
                    if line in seen:
                        continue
                    seen.add(line)
                    hit = log_hit(line, formation_id)
                    hits.setdefault(hit["result_id"], hit)
                    if len(hits) >= MAX_HITS_PER_PEER:
                        return list(hits.values())
        except FileNotFoundError:
            continue
    return list(hits.values())


def matching_cri_texts(chunk: bytes, words: list[str]) -> Iterator[str]:
    """The texts of the CRI lines of `chunk` (whole lines) that contain every word, never
    matched on a line's time, stream or tag. The common case, no word that a prefix may hold:
    the line is matched whole first, at `matching_lines`' speed (a chunk without the words
    costs no parsing), then each line found is parsed and its text alone matched again. A
    word that a prefix may hold (`stdout`, `err`, `2026`) would make every line a candidate:
    then the prefixes are cut out of the chunk first (one regex pass, about 110 MB/s against
    20 for parsing every line) and only what was a CRI line's text is searched.

    A `\r` inside a text splits the line on the slow path (non-ASCII chunks): its second half
    is no CRI line, and not found (a progress bar's redraws). A line the keeper cut into
    fragments is searched fragment by fragment."""
    if any(in_a_prefix(word) for word in words):
        for found in matching_lines(CRI_PREFIX.sub(b"\0", chunk), words):
            if found.startswith("\0"):  # a CRI line's text, its prefix cut
                yield found[1:].rstrip("\r\n")
        return
    for found in matching_lines(chunk, words):
        line = parse(found.rstrip("\r\n").encode())
        if line is None:
            continue
        text = line.text.decode("utf-8", "replace")
        if matches(text, words):
            yield text.rstrip("\r")


def in_a_prefix(word: str) -> bool:
    """Whether a CRI line's time, stream or tag may contain `word` (lowered, no spaces)."""
    return any(word in token for token in STREAMS) or set(word) <= TIME_CHARS


def whole_line_chunks(path: Path) -> Iterator[bytes]:
    """A file in chunks that end after a newline (the last one may not), so no line is cut in
    two: memory stays at about `SCAN_CHUNK` however large the file, but for a line longer
    than a chunk, which is read whole (a log file's size is bounded by its rotation). The
    partial line at a chunk's end is read again with the next chunk (a seek back, no copy).
    Public: the scan's reader, a unit with its own memory contract (issue 17), tested as such."""
    with open(path, "rb") as handle:
        end = os.fstat(handle.fileno()).st_size
        size = SCAN_CHUNK
        # Never more than what is left (at least a small read, for a file still growing):
        # `read(n)` allocates n bytes first, and a 1 MiB buffer per small log, in each scan
        # thread, left megabytes of free heap in the threads' malloc arenas that the process
        # then kept (issue 17: 8 MiB after one search of 20 small logs).
        while block := handle.read(min(size, max(end - handle.tell(), MIN_READ))):
            cut = block.rfind(b"\n") + 1
            if cut == 0 and len(block) == size:  # one line longer than the chunk: grow
                handle.seek(-len(block), 1)
                size *= 2
                continue
            if 0 < cut < len(block):
                handle.seek(cut - len(block), 1)
                block = block[:cut]
            size = SCAN_CHUNK
            yield block

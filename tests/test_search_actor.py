"""SearchesActor and its runs in-process (`search_kit`): a real SQLite store in tmp_path, an
EventBus, a fake fleet whose formations answer `SearchTarget` with log folders in tmp_path, and
formations' `search.path` answered by an httpx MockTransport. Virtual time (`autojump_clock`).

What it proves: a search is created, started, finds the hits of every formation (log lines,
rotated files, a peer's own answer; duplicates merged, malformed or failing peers counted as
drops), stores them and announces them on the bus; a live run keeps following new lines and
new formations until stopped, and nothing is found after; a rerun clears and scans again; an
export holds everything; a delete ends the run; a registry started over a store with an
interrupted run marks it stopped; bad requests get the contract's codes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from log_kit import at
from search_kit import BROKEN_PORT, PEER_PORT, ask, expect, world_of

from actors.search import (
    CreateSearch,
    DeleteSearch,
    ExportSearch,
    GetSearch,
    ListSearches,
    PatchSearch,
    SearchResult,
    SearchResults,
    StartSearch,
    StopSearch,
)
from supervisor.core.cri import frame_lines, frame_partial
from supervisor.core.errors import FsupError
from supervisor.runtime.events import SNAPSHOTS


def titles(items: list[dict[str, Any]]) -> set[str]:
    return {item["title"] for item in items}


async def test_a_full_run_finds_stores_and_announces_every_hit(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with world_of(tmp_path) as w:
        await w.add_formation(
            "alpha",
            {
                "stdout.log": "boot ok\nERROR disk full on /data\n",
                "stderr.log.1": "warning: Disk   FULL soon\n",
            },
        )
        await w.add_formation("beta", {"stdout.log": "ERROR disk full on /data\n"}, PEER_PORT)
        await w.add_formation("delta", {}, BROKEN_PORT)
        await w.add_formation("gone", {"stdout.log": "disk full\n"}, gone=True)
        with w.bus.subscribe() as events:
            created = await ask(w.searches, CreateSearch("disk full"))
            sid = created["search"]["id"]
            assert created["search"]["state"] == "idle" and created["results"]["count"] == 0
            assert (await expect(events, "search_created", sid)).data == {
                "keyword": "disk full",
                "mode": "full",
            }
            started = await ask(w.searches, StartSearch(sid))
            assert started["search"]["state"] == "running"
            await expect(events, "search_completed", sid)
            await expect(events, "search_state_changed", sid, state="complete")
        found = [
            e
            for e in w.bus.history(limit=1000)
            if e.type == "search_hit_found" and e.search_id == sid
        ]
        assert titles([e.data for e in found]) == {
            "ERROR disk full on /data",
            "warning: Disk   FULL soon",
            "Disk full runbook",
        }

        detail = await ask(w.searches, GetSearch(sid))
        assert detail["search"]["state"] == "complete" and detail["search"]["active_run_id"] is None
        assert detail["search"]["last_run_summary"]["state"] == "complete"
        stats = detail["telemetry"]
        assert (stats["peers"], stats["peers_done"], stats["hits"]) == (3, 3, 3)
        assert (stats["requests"], stats["responses"], stats["drops"]) == (2, 1, 1)
        assert detail["progress"]["percent"] == 100.0 and detail["results"]["count"] == 3

        page = await ask(w.searches, SearchResults(sid, sort="sources"))
        assert page["total"] == 3
        top = page["items"][0]
        assert (top["title"], top["sources"], top["kind"]) == (
            "ERROR disk full on /data",
            ["alpha", "beta"],
            "log",
        )
        peer = await ask(w.searches, SearchResults(sid, sort="score", limit=1))
        assert peer["items"][0]["kind"] == "peer" and peer["items"][0]["score"] == 0.9
        one = await ask(w.searches, SearchResult(sid, top["result_id"]))
        assert one == top
        filtered = await ask(w.searches, SearchResults(sid, q="runbook"))
        assert [i["title"] for i in filtered["items"]] == ["Disk full runbook"]

        exported = await ask(w.searches, ExportSearch(sid))
        assert exported["search"]["id"] == sid and exported["total"] == 3
        assert titles(exported["results"]) == titles(page["items"])
        json.dumps(exported)  # an export is plain JSON


async def test_a_live_run_follows_lines_and_formations_until_stopped_then_reruns(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with world_of(tmp_path) as w:
        alpha = await w.add_formation("alpha", {"stdout.log": "payment failed: card 1\n"})
        with w.bus.subscribe() as events:
            created = await ask(w.searches, CreateSearch("payment failed", "live", autostart=True))
            sid = created["search"]["id"]
            first_run = created["search"]["active_run_id"]
            assert created["search"]["state"] == "running" and first_run
            await expect(events, "search_progress", sid, phase="live")
            # Starting what runs already changes nothing.
            same = await ask(w.searches, StartSearch(sid))
            assert same["search"]["active_run_id"] == first_run
            await trio.sleep(1)
            with (alpha / "stdout.log").open("a") as log:
                log.write("payment failed: card 2\n")
            hit = await expect(events, "search_hit_found", sid, title="payment failed: card 2")
            assert hit.data["sources"] == ["alpha"]
            await w.add_formation("gamma", {"stderr.log": "payment FAILED: card 3\n"})
            await expect(events, "search_hit_found", sid, title="payment FAILED: card 3")

            stopped = await ask(w.searches, StopSearch(sid))
            assert stopped["search"]["state"] == "stopped"
            assert stopped["search"]["last_run_summary"]["state"] == "stopped"
            assert stopped["search"]["last_run_summary"]["finished_at"]
            await expect(events, "search_state_changed", sid, state="stopped")
        with (alpha / "stdout.log").open("a") as log:
            log.write("payment failed: card 4\n")
        await trio.sleep(10)
        assert (await ask(w.searches, SearchResults(sid)))["total"] == 3
        assert (await ask(w.searches, StopSearch(sid)))["search"]["state"] == "stopped"

        with w.bus.subscribe() as events:
            rerun = await ask(w.searches, StartSearch(sid, mode="full", rerun=True))
            second_run = rerun["search"]["active_run_id"]
            assert second_run not in (None, first_run) and rerun["results"]["count"] == 0
            await expect(events, "search_state_changed", sid, state="complete")
        detail = await ask(w.searches, GetSearch(sid))
        assert detail["search"]["mode"] == "full"
        assert detail["search"]["last_run_summary"]["run_id"] == second_run
        assert detail["results"]["count"] == 4  # card 4 too: it is in the log now


def cri(ts_s: int, stream: str, text: str) -> str:
    return frame_lines(at(ts_s), stream, text.encode() + b"\n").decode()


async def test_runs_search_the_keepers_files_on_the_text_of_their_lines(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with world_of(tmp_path) as w:
        alpha = await w.add_formation(
            "alpha",
            {
                "1.0.0.log": cri(1, "stderr", "boom") + cri(2, "stdout", "stderr: boom"),
                "1.0.0.log.1": cri(0, "stderr", "older stderr boom"),
            },
        )
        with w.bus.subscribe() as events:
            created = await ask(w.searches, CreateSearch("stderr boom", "live", autostart=True))
            sid = created["search"]["id"]
            await expect(events, "search_progress", sid, phase="live")
            await trio.sleep(1)  # the run follows the logs from now
            # The new version's file, during an update; a line in two fragments.
            with (alpha / "1.1.0.log").open("ab") as log:
                log.write(frame_partial(at(5), "stdout", b"new stderr"))
                log.write(frame_lines(at(6), "stdout", b" boom\n"))
                log.write(frame_lines(at(7), "stderr", b"boom, no word from the stream\n"))
            await expect(events, "search_hit_found", sid, title="new stderr boom")
            assert (await ask(w.searches, StopSearch(sid)))["search"]["state"] == "stopped"
        results = await ask(w.searches, SearchResults(sid))
        assert titles(results["items"]) == {"stderr: boom", "older stderr boom", "new stderr boom"}


async def test_patch_list_and_delete_a_running_search(tmp_path: Path, autojump_clock: Any) -> None:
    async with world_of(tmp_path) as w:
        await w.add_formation("alpha", {"stdout.log": "needle\n"})
        plain = (await ask(w.searches, CreateSearch("hay")))["search"]["id"]
        live = (await ask(w.searches, CreateSearch("needle", "live", autostart=True)))["search"][
            "id"
        ]
        with w.bus.subscribe() as events:
            patched = await ask(w.searches, PatchSearch(plain, keyword="straw", pinned=True))
            assert (patched["search"]["keyword"], patched["search"]["pinned"]) == ("straw", True)
            update = await expect(events, "search_updated", plain)
            assert update.data == {"keyword": "straw", "pinned": True}
            listed = await ask(w.searches, ListSearches())
            assert [s["id"] for s in listed] == [plain, live]  # pinned first
            assert listed[1]["state"] == "running"

            assert await ask(w.searches, DeleteSearch(live)) == {"id": live, "deleted": True}
            await expect(events, "search_state_changed", live, state="deleted")
        await trio.sleep(5)  # the run's end arrives after the delete; nothing comes back
        assert [s["id"] for s in await ask(w.searches, ListSearches())] == [plain]
        with pytest.raises(FsupError) as info:
            await ask(w.searches, GetSearch(live))
        assert info.value.code == "SEARCH_NOT_FOUND"


async def test_a_run_interrupted_by_fsup_stopping_is_stopped_at_the_next_start(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with world_of(tmp_path) as w:
        await w.add_formation("alpha", {"stdout.log": "needle\n"})
        sid = (await ask(w.searches, CreateSearch("needle", "live", autostart=True)))["search"][
            "id"
        ]
    # fsup stopped under the live run; the next one opens the same store.
    async with world_of(tmp_path) as w:
        detail = await ask(w.searches, GetSearch(sid))
        assert detail["search"]["state"] == "stopped"
        assert detail["search"]["active_run_id"] is None
        assert detail["search"]["last_run_summary"]["state"] == "stopped"
        assert detail["search"]["last_run_summary"]["finished_at"]
        # It resumes only when asked.
        assert w.store.formations() == [] and w.bus.history() == []


async def test_bad_requests_get_the_contract_codes(tmp_path: Path, autojump_clock: Any) -> None:
    async with world_of(tmp_path) as w:
        sid = (await ask(w.searches, CreateSearch("x")))["search"]["id"]
        for message in (
            GetSearch("nope"),
            StartSearch("nope"),
            StopSearch("nope"),
            PatchSearch("nope", pinned=True),
            DeleteSearch("nope"),
            SearchResults("nope"),
            SearchResult("nope", "r"),
            ExportSearch("nope"),
        ):
            with pytest.raises(FsupError) as info:
                await ask(w.searches, message)
            error = info.value
            assert (error.code, error.status) == ("SEARCH_NOT_FOUND", 404), message
            assert error.details["search_id"] == "nope"
        with pytest.raises(FsupError) as missing:
            await ask(w.searches, SearchResult(sid, "r-1"))
        assert (missing.value.code, missing.value.status) == ("RESULT_NOT_FOUND", 404)
        assert missing.value.details == {"search_id": sid, "result_id": "r-1"}
        with pytest.raises(FsupError) as unknown:
            await ask(w.searches, "frobnicate")
        assert (unknown.value.code, unknown.value.status) == ("INVALID_REQUEST", 400)
        # None of it hurt the registry.
        assert [s["id"] for s in await ask(w.searches, ListSearches())] == [sid]


async def test_deleted_searches_leave_nothing_in_the_registry_the_bus_or_the_store(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Issue 17: memory stays flat while searches come and go (complete, stopped, live)."""
    async with world_of(tmp_path) as w:
        await w.add_formation("alpha", {"stdout.log": "needle one\nneedle two\n"})
        registry = w.made[-1]
        assert registry.nursery is not None and registry.run_supervisor is not None
        tasks_before = len(registry.nursery.child_tasks)
        for round_ in range(10):
            mode = "live" if round_ % 2 else "full"
            with w.bus.subscribe() as events:
                created = await ask(w.searches, CreateSearch("needle", mode, autostart=True))
                sid = created["search"]["id"]
                if mode == "full":
                    await expect(events, "search_completed", sid)
            await ask(w.searches, DeleteSearch(sid))
        for _ in range(100):  # the runs end on their own, after the delete is answered
            if len(registry.nursery.child_tasks) == tasks_before:
                break
            await trio.sleep(0.1)
        assert registry.runs == {}
        assert len(registry.nursery.child_tasks) == tasks_before
        assert not [name for name in registry.run_supervisor.restarts if "search-run" in name]
        assert [e for e in w.bus.history(limit=10_000) if e.type in SNAPSHOTS] == []
        db = w.store.connection
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM results").fetchone() == (0,)

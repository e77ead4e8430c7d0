"""The search registry never makes a move its state tables refuse, whatever the order of the
requests and of the runs' ends (`search_kit`'s registry, on trio's MockClock).

What it proves: random sequences of create, start, rerun, stop, delete, waits (which let runs
report and end on their own) and restarts of the registry over the same store (fsup stopping
under its runs) never crash an actor with an illegal transition; every state announced on the
bus follows the table; after each request a search is `running` exactly while the registry
holds its run, no run is left marked running without one, and a search at rest shows the state
its last run ended in. Then, one by one: the two windows the registry's start settles (a run
interrupted, a run's end never announced), and the two races between a run's end and the
registry's stop (whichever ends the run first, the other keeps that end).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_kit import World, ask, world_of

from actors.base import Actor, Reply, spawn
from actors.search import CreateSearch, DeleteSearch, GetSearch, StartSearch, StopSearch
from actors.search_run import RunEnded, SearchRunActor
from supervisor.core.errors import FsupError
from supervisor.core.search_states import AFTER_RUN, ALLOWED, RunState, SearchState
from supervisor.storage.store import SearchStore, Store

Op = tuple[Any, ...]
MODES = st.sampled_from(["full", "live"])
SLOT = st.integers(0, 3)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), MODES, st.booleans()),
        st.tuples(st.just("start"), SLOT, st.none() | MODES),
        st.tuples(st.just("rerun"), SLOT, st.none() | MODES),
        st.tuples(st.just("stop"), SLOT),
        st.tuples(st.just("delete"), SLOT),
        st.tuples(st.just("wait"), st.sampled_from([0.0, 0.001, 0.6, 5.0])),
        st.tuples(st.just("restart")),
    ),
    max_size=24,
)


class Failures(logging.Handler):
    """Every error an actor logs (a crash, with its traceback): there must be none."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def failures_logged() -> Iterator[Failures]:
    handler = Failures()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


class Story:
    """What the test knows of each search: its id, and the state it was last seen in."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.seen: dict[str, SearchState] = {}

    def move(self, search_id: str, new: SearchState) -> None:
        old = self.seen[search_id]
        assert new is old or new in ALLOWED[old], f"{search_id}: {old} -> {new}"
        self.seen[search_id] = new

    def follow(self, w: World, since: int) -> int:
        """Check the states the bus announced after event `since`; the last event's id."""
        last = since
        for event in w.bus.history(limit=100_000):
            if event.id <= since:
                continue
            last = event.id
            if event.type == "search_created":
                self.seen[event.search_id] = SearchState.IDLE
            elif event.type == "search_state_changed":
                self.move(event.search_id, SearchState(event.data["state"]))
        return last


def check_the_store(w: World, story: Story) -> None:
    registry = w.made[-1]
    held = {run_id: search_id for search_id, (run_id, _) in registry.runs.items()}
    db = w.store.connection
    running = db.execute("SELECT id, search_id FROM runs WHERE state = 'running'").fetchall()
    assert {run_id: search_id for run_id, search_id in running}.items() <= held.items()
    searches = SearchStore(w.store)
    for search in searches.searches():
        state = search["state"]
        assert (state is SearchState.RUNNING) == (search["id"] in registry.runs), search
        last = searches.last_run(search["id"])
        if state is not SearchState.RUNNING and last is not None:
            assert state is AFTER_RUN[last["state"]], (search, last)
        story.move(search["id"], state)


async def perform(w: World, story: Story, op: Op, formation: str) -> None:
    kind = op[0]
    if kind == "create":
        created = await ask(w.searches, CreateSearch(formation, op[1], autostart=op[2]))
        story.ids.append(created["search"]["id"])
        return
    if kind == "wait":
        await trio.sleep(op[1])
        return
    if not story.ids:
        return
    search_id = story.ids[op[1] % len(story.ids)]
    message = {
        "start": lambda: StartSearch(search_id, op[2]),
        "rerun": lambda: StartSearch(search_id, op[2], rerun=True),
        "stop": lambda: StopSearch(search_id),
        "delete": lambda: DeleteSearch(search_id),
    }[kind]()
    try:
        await ask(w.searches, message)
    except FsupError as error:  # a search deleted before: the only refusal there is
        assert error.code == "SEARCH_NOT_FOUND" and story.seen[search_id] is SearchState.DELETED


async def play(tmp: Path, ops: list[Op]) -> None:
    story = Story()
    segments: list[list[Op]] = [[]]
    for op in ops:
        if op[0] == "restart":
            segments.append([])
        else:
            segments[-1].append(op)
    for number, segment in enumerate(segments):
        async with world_of(tmp) as w:
            formation = f"alpha{number}"
            await w.add_formation(formation, {"stdout.log": f"{formation} one\n{formation} 2\n"})
            await w.add_formation(f"beta{number}", {"stderr.log": f"{formation} three\n"})
            check_the_store(w, story)  # what the registry's start settled
            since = 0
            for op in segment:
                await perform(w, story, op, formation)
                since = story.follow(w, since)
                check_the_store(w, story)
            assert len(w.made) == 1  # the registry never crashed


@given(OPS)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_no_sequence_of_requests_makes_an_illegal_move(ops: list[Op]) -> None:
    with failures_logged() as failures, tempfile.TemporaryDirectory() as tmp:
        trio.run(play, Path(tmp), ops, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [r.getMessage() for r in failures.records] == []


def store_with(tmp_path: Path, run_state: RunState) -> None:
    """A store as fsup left it: search `s1` marked running, its run `r1` in `run_state`."""
    store = Store(tmp_path / "state.db")
    searches = SearchStore(store)
    searches.insert_search("s1", "needle", "full")
    searches.insert_run("r1", "s1", "full")
    searches.move_search("s1", SearchState.RUNNING, active_run_id="r1")
    if run_state is not RunState.RUNNING:
        searches.end_run("r1", run_state, {"progress": {"phase": run_state.value}})
    store.close()


async def test_a_search_whose_run_ended_unannounced_takes_the_runs_end_at_the_next_start(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """fsup stopped between a run's end and the registry's turn (its `RunEnded` lost): the
    search no longer stays `running` with no run to stop."""
    store_with(tmp_path, RunState.COMPLETE)
    async with world_of(tmp_path) as w:
        detail = await ask(w.searches, GetSearch("s1"))
        assert detail["search"]["state"] == "complete"
        assert detail["search"]["active_run_id"] is None
        assert detail["search"]["last_run_summary"]["state"] == "complete"
        restarted = await ask(w.searches, StartSearch("s1"))
        assert restarted["search"]["state"] == "running"
        assert w.bus.history()[0].type == "search_state_changed"  # nothing before: a quiet start


async def test_a_search_whose_run_was_interrupted_is_stopped_at_the_next_start(
    tmp_path: Path, autojump_clock: Any
) -> None:
    store_with(tmp_path, RunState.RUNNING)
    async with world_of(tmp_path) as w:
        detail = await ask(w.searches, GetSearch("s1"))
        assert detail["search"]["state"] == "stopped"
        assert detail["search"]["last_run_summary"]["state"] == "stopped"
        assert detail["search"]["last_run_summary"]["finished_at"]
        assert w.bus.history() == []


class Registry(Actor):
    """Stands in for the registry of a run: keeps what the run tells it."""

    name = "registry"

    def __init__(self) -> None:
        super().__init__()
        self.told: list[Any] = []
        self.ended = trio.Event()

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        self.told.append(message)
        self.ended.set()


async def test_a_run_that_finishes_after_the_registry_stopped_it_stays_stopped(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The registry marked the run stopped while the run's scan was finishing: the run's own
    end keeps that state (no `complete`, no `search_completed`), and says so."""
    store_with(tmp_path, RunState.RUNNING)
    async with world_of(tmp_path) as w:  # settles r1 stopped; r2 is this test's run
        searches = SearchStore(w.store)
        searches.insert_run("r2", "s1", "full")
        searches.move_search("s1", SearchState.RUNNING, active_run_id="r2")
        w.fleet.open = trio.Event()  # the run waits for the fleet's answer
        registry = Registry()
        registry_ref = await spawn(w.nursery, registry)
        ctx = w.made[-1].ctx
        await spawn(w.nursery, SearchRunActor(ctx, registry_ref, "s1", "r2", "needle", "full"))
        await trio.testing.wait_all_tasks_blocked()
        searches.end_run("r2", RunState.STOPPED, {})  # the registry's stop, its StopRun late
        w.fleet.open.set()  # no formations: the scan finishes at once
        await registry.ended.wait()
        assert registry.told == [RunEnded("s1", "r2", RunState.STOPPED)]
        last = searches.last_run("s1")
        assert last is not None and last["id"] == "r2" and last["state"] is RunState.STOPPED
        assert last["telemetry"]["progress"]["phase"] == "stopped"
        assert "search_completed" not in {e.type for e in w.bus.history()}


async def test_stopping_a_search_whose_run_just_completed_leaves_it_complete(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The run wrote its end (`complete`) and its `RunEnded` is still on the way when a stop
    arrives: the search takes the run's end; the run is not turned stopped."""
    async with world_of(tmp_path) as w:
        w.fleet.open = trio.Event()
        started = await ask(w.searches, CreateSearch("needle", "full", autostart=True))
        sid, run_id = started["search"]["id"], started["search"]["active_run_id"]
        SearchStore(w.store).end_run(run_id, RunState.COMPLETE, {})  # the run's own end
        stopped = await ask(w.searches, StopSearch(sid))
        assert stopped["search"]["state"] == "complete"
        assert stopped["search"]["last_run_summary"]["state"] == "complete"
        assert w.made[-1].runs == {} and len(w.made) == 1
        w.fleet.open.set()
        changes = [e.data["state"] for e in w.bus.history() if e.type == "search_state_changed"]
        assert changes == ["running", "complete"]

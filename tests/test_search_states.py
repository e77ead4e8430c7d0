"""The search and run state tables (`supervisor.core.search_states`), pair by pair, and the
store's checked moves on a real SQLite file.

What it proves: every allowed move passes and every other pair is refused; the values are the
API's strings, in the OpenAPI document's order; a move the table refuses leaves the row as it
was; a run's progress never touches its state; ending a run again in the same state only
refreshes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import pytest

from supervisor.core.search_states import (
    AFTER_RUN,
    ALLOWED,
    RUN_ALLOWED,
    STORED,
    IllegalTransition,
    RunState,
    SearchState,
    check_run_transition,
    check_transition,
)
from supervisor.http.openapi.kit import SEARCH_STATES
from supervisor.storage.store import SearchStore, Store

S, R = SearchState, RunState

# The moves, written out once more by hand: the tables must say exactly this.
SEARCH_MOVES = {
    (S.IDLE, S.RUNNING),
    (S.IDLE, S.DELETED),
    (S.RUNNING, S.COMPLETE),
    (S.RUNNING, S.STOPPED),
    (S.RUNNING, S.DELETED),
    (S.COMPLETE, S.RUNNING),
    (S.COMPLETE, S.DELETED),
    (S.STOPPED, S.RUNNING),
    (S.STOPPED, S.DELETED),
    (S.ERROR, S.RUNNING),
    (S.ERROR, S.DELETED),
}
RUN_MOVES = {(R.RUNNING, R.COMPLETE), (R.RUNNING, R.STOPPED)}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(SearchState, SearchState)))
def test_every_search_pair_is_allowed_or_refused_as_the_table_says(
    old: SearchState, new: SearchState
) -> None:
    if (old, new) in SEARCH_MOVES:
        check_transition(old, new)
    else:
        with pytest.raises(IllegalTransition, match=f"search {old} -> {new}"):
            check_transition(old, new)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(RunState, RunState)))
def test_every_run_pair_is_allowed_or_refused_as_the_table_says(
    old: RunState, new: RunState
) -> None:
    if (old, new) in RUN_MOVES:
        check_run_transition(old, new)
    else:
        with pytest.raises(IllegalTransition, match=f"run {old} -> {new}"):
            check_run_transition(old, new)


def test_the_tables_cover_every_state_and_a_run_ends_in_a_search_state() -> None:
    assert set(ALLOWED) == set(SearchState) and set(RUN_ALLOWED) == set(RunState)
    # A run's end is what its search becomes: a move the search table allows.
    ended = {new for old, new in RUN_MOVES}
    assert set(AFTER_RUN) == ended
    for run_state, search_state in AFTER_RUN.items():
        assert search_state.value == run_state.value
        check_transition(S.RUNNING, search_state)


def test_the_values_are_the_api_strings_in_the_openapi_order() -> None:
    assert {s.name: s.value for s in SearchState} == {
        "IDLE": "idle",
        "RUNNING": "running",
        "COMPLETE": "complete",
        "STOPPED": "stopped",
        "ERROR": "error",
        "DELETED": "deleted",
    }
    assert {s.name: s.value for s in RunState} == {
        "RUNNING": "running",
        "COMPLETE": "complete",
        "STOPPED": "stopped",
    }
    assert [s.value for s in STORED] == SEARCH_STATES  # the Search schema's enum


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "state.db")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def searches(store: Store) -> SearchStore:
    return SearchStore(store)


def raw_state(store: Store, table: str, row_id: str) -> str:
    (state,) = store.connection.execute(
        f"SELECT state FROM {table} WHERE id = ?",  # noqa: S608 - the test's own names
        (row_id,),
    ).fetchone()
    assert type(state) is str
    return state


def test_the_store_reads_states_as_members_and_writes_the_plain_strings(
    store: Store, searches: SearchStore
) -> None:
    searches.insert_search("s1", "needle", "full")
    search = searches.search("s1")
    assert search is not None and search["state"] is S.IDLE
    assert raw_state(store, "searches", "s1") == "idle"
    searches.insert_run("r1", "s1", "full")
    searches.move_search("s1", S.RUNNING, active_run_id="r1")
    assert raw_state(store, "searches", "s1") == "running"
    assert searches.run_state("r1") is R.RUNNING
    last = searches.last_run("s1")
    assert last is not None and last["state"] is R.RUNNING
    assert searches.interrupted_runs() == [("r1", "s1")]


def test_a_refused_move_leaves_the_search_as_it_was(searches: SearchStore) -> None:
    searches.insert_search("s1", "needle", "full")
    before = searches.search("s1")
    with pytest.raises(IllegalTransition):
        searches.move_search("s1", S.COMPLETE, active_run_id="r1")
    assert searches.search("s1") == before
    searches.move_search("s1", S.RUNNING, active_run_id="r1")
    searches.move_search("s1", S.RUNNING, active_run_id="r2")  # the same state: no move
    after = searches.search("s1")
    assert after is not None and (after["state"], after["active_run_id"]) == (S.RUNNING, "r2")
    searches.delete_search("s1")
    assert searches.search("s1") is None
    searches.move_search("s1", S.STOPPED)  # gone meanwhile: left gone
    searches.delete_search("s1")
    assert searches.searches() == []


def test_a_run_ends_once_and_its_progress_never_moves_it(searches: SearchStore) -> None:
    searches.insert_search("s1", "needle", "full")
    searches.insert_run("r1", "s1", "live")
    searches.record_progress("r1", {"progress": {"phase": "live"}})
    searches.end_run("r1", R.STOPPED, {"progress": {"phase": "live"}})
    first = searches.last_run("s1")
    assert first is not None and first["state"] is R.STOPPED and first["finished_at"]
    # A run's last report after the registry stopped it: the state stays.
    searches.record_progress("r1", {"progress": {"phase": "scanning"}})
    assert searches.run_state("r1") is R.STOPPED
    # Its own end in the same state refreshes its telemetry; another end is refused.
    searches.end_run("r1", R.STOPPED, {"progress": {"phase": "stopped"}})
    last = searches.last_run("s1")
    assert last is not None and last["telemetry"] == {"progress": {"phase": "stopped"}}
    with pytest.raises(IllegalTransition):
        searches.end_run("r1", R.COMPLETE, {})
    assert searches.run_state("r1") is R.STOPPED
    searches.delete_search("s1")  # its runs with it
    assert searches.run_state("r1") is None
    searches.end_run("r1", R.COMPLETE, {})  # gone with its search: left gone


def test_a_hit_for_a_search_deleted_meanwhile_is_dropped(searches: SearchStore) -> None:
    """A run's report still in its mailbox when its search was deleted: nothing to add to (it
    used to fail the foreign key and crash the run, which its supervisor then restarted)."""
    hit = {"result_id": "r-1", "kind": "log", "title": "needle", "sources": ["alpha"]}
    searches.insert_search("s1", "needle", "full")
    assert searches.upsert_result("s1", hit) is True
    assert searches.upsert_result("s1", {**hit, "sources": ["beta"]}) is False
    assert searches.result("s1", "r-1") == {**hit, "sources": ["alpha", "beta"], "first_seen": ANY}
    searches.delete_search("s1")
    assert searches.upsert_result("s1", hit) is False
    assert searches.results("s1", 10, 0, "recent", None) == ([], 0)

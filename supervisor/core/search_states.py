"""A search's states, a run's states, and the transitions allowed between them.

Like the formation's `lifecycle.py` (and supervisord's `states.py`): every change of a search's
or a run's state goes through `check_transition` or `check_run_transition`, so an impossible
move (a deleted search coming back, a complete run turned stopped) is a bug caught where it
happens rather than a puzzling status later. The values are the API's, the store's and the
event stream's strings, unchanged (`StrEnum`).

A search is what the user sees; a run is one execution of it. A search is `running` exactly
while the registry holds a run of it; when the run ends, the search takes the state the run
ended in (`AFTER_RUN`). Writing the state a search or a run already has is no transition (a
run's own last snapshot after the registry stopped it): callers check only a change.
"""

from __future__ import annotations

from enum import StrEnum


class SearchState(StrEnum):
    # In the contract's order (seed 003; the OpenAPI document's enum): see `STORED`.
    IDLE = "idle"  # created, never started
    RUNNING = "running"  # the registry holds a run of it
    COMPLETE = "complete"  # its last run scanned everything there was (a full run's end)
    STOPPED = "stopped"  # its last run was stopped: asked to, rerun, or fsup stopped under it
    ERROR = "error"  # in the contract and the OpenAPI enum; nothing enters it today
    DELETED = "deleted"  # gone: announced on the bus (`search_state_changed`), never stored


class RunState(StrEnum):
    RUNNING = "running"  # scanning, or following (live mode)
    COMPLETE = "complete"  # a full run that scanned every peer
    STOPPED = "stopped"  # told to stop, or interrupted by fsup stopping


# The states a stored search can be in (the API's `Search.state`), in the contract's order.
STORED: tuple[SearchState, ...] = tuple(s for s in SearchState if s is not SearchState.DELETED)

# Any search that is not running can be started (or rerun) and deleted.
_AT_REST = frozenset({SearchState.RUNNING, SearchState.DELETED})

ALLOWED: dict[SearchState, frozenset[SearchState]] = {
    SearchState.IDLE: _AT_REST,
    # Its run ended (complete or stopped, `AFTER_RUN`), or the search is deleted under it.
    SearchState.RUNNING: frozenset(
        {SearchState.COMPLETE, SearchState.STOPPED, SearchState.DELETED}
    ),
    SearchState.COMPLETE: _AT_REST,
    SearchState.STOPPED: _AT_REST,
    SearchState.ERROR: _AT_REST,
    SearchState.DELETED: frozenset(),
}

RUN_ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.RUNNING: frozenset({RunState.COMPLETE, RunState.STOPPED}),
    RunState.COMPLETE: frozenset(),  # a run is not started again: a rerun is a new run
    RunState.STOPPED: frozenset(),
}

# The state a search takes when its run ends in the given state.
AFTER_RUN: dict[RunState, SearchState] = {
    RunState.COMPLETE: SearchState.COMPLETE,
    RunState.STOPPED: SearchState.STOPPED,
}


class IllegalTransition(RuntimeError):
    pass


def check_transition(old: SearchState, new: SearchState) -> None:
    if new not in ALLOWED[old]:
        raise IllegalTransition(f"search {old} -> {new} is not a legal transition")


def check_run_transition(old: RunState, new: RunState) -> None:
    if new not in RUN_ALLOWED[old]:
        raise IllegalTransition(f"run {old} -> {new} is not a legal transition")

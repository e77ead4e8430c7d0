"""How a formation answers its lifecycle requests, as tables (the way h11 keeps its own).

Two lookups decide, in order (`FormationMachine._on_request` reads them, and
tests/test_formation_machine.py walks them row by row):

1. `HOLDS`: a sub-state that decides before the state does.
   - exiting (a delete or shutdown accepted): a start or restart is refused with
     `FORMATION_BUSY`, a stop waits for the exit, a reconcile starts nothing; the exit's plan
     is never replaced (`stopping.REPLANS`), so the actor always ends;
   - switching (an update or rollback of a formation without a process: its version switches
     in place): a start or restart is refused with `UPDATE_IN_PROGRESS`, a reconcile starts
     nothing; so the version switched to is never the version of a process that runs.
2. `START`, `STOP`, `RESTART`: what each does in each state; `RECONCILE_FROM`: the states a
   reconcile starts a formation meant to run from.

Updates and rollbacks are `update.UpdateMachine`'s; reads (snapshot, nodes) never reach the
machine (`views.py`).
"""

from __future__ import annotations

from enum import Enum, StrEnum

from .lifecycle import State
from .messages import EnsureRunning, Request, Restart, Start, Stop


class Exiting(StrEnum):
    """Why the actor ends once its process is stopped."""

    DELETE = "delete"
    SHUTDOWN = "shutdown"  # fsup stops: the desired state is kept for the next one


class Hold(Enum):
    """A sub-state that decides before the state does."""

    NONE = "none"
    EXITING = "exiting"
    SWITCHING = "switching"


class Verdict(Enum):
    PROCEED = "proceed"  # the state decides (the tables below)
    REFUSE = "refuse"  # answered now with the hold's error
    AWAIT_EXIT = "await_exit"  # a stop: answered, stopped, as the actor ends
    DECLINE = "decline"  # a reconcile: starts nothing (answered False)


HOLDS: dict[Hold, dict[type[Request], Verdict]] = {
    Hold.NONE: {},
    Hold.EXITING: {
        Start: Verdict.REFUSE,
        Restart: Verdict.REFUSE,
        Stop: Verdict.AWAIT_EXIT,
        EnsureRunning: Verdict.DECLINE,
    },
    Hold.SWITCHING: {
        Start: Verdict.REFUSE,
        Restart: Verdict.REFUSE,
        EnsureRunning: Verdict.DECLINE,
    },
}


def verdict(hold: Hold, request: Request) -> Verdict:
    return HOLDS[hold].get(type(request), Verdict.PROCEED)


class Act(Enum):
    REFUSE = "refuse"  # answered now with an error: the state does not allow it
    JOIN = "join"  # a start is under way: wait for it
    SPAWN = "spawn"  # no process: start one now (a backoff is cancelled)
    STOP = "stop"  # a process runs or starts: stop it, under the request's plan
    REPLAN = "replan"  # a stop is under way: what follows it changes
    SETTLE = "settle"  # no process, none coming but by a backoff: stopped at once


START: dict[State, Act] = {
    State.STOPPED: Act.SPAWN,
    State.CRASHED: Act.SPAWN,
    State.RESTARTING: Act.SPAWN,
    State.STARTING: Act.JOIN,
    State.RUNNING: Act.REFUSE,  # FORMATION_ALREADY_RUNNING: restart is the way
    State.STOPPING: Act.REFUSE,  # FORMATION_ALREADY_RUNNING: start again once stopped
}
STOP: dict[State, Act] = {
    State.STOPPED: Act.REFUSE,  # FORMATION_NOT_RUNNING
    State.CRASHED: Act.SETTLE,
    State.RESTARTING: Act.SETTLE,
    State.STARTING: Act.STOP,
    State.RUNNING: Act.STOP,
    State.STOPPING: Act.REPLAN,
}
RESTART: dict[State, Act] = {
    State.STOPPED: Act.SPAWN,
    State.CRASHED: Act.SPAWN,
    State.RESTARTING: Act.SPAWN,
    State.STARTING: Act.STOP,
    State.RUNNING: Act.STOP,
    State.STOPPING: Act.REPLAN,
}
RECONCILE_FROM = frozenset({State.STOPPED, State.CRASHED})

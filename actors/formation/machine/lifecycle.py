"""A formation's states and the transitions allowed between them.

Like supervisord's process state machine: every change goes through `check_transition`, so an
impossible move (say `stopped -> running` without `starting`) is a bug caught where it happens
rather than a puzzling status later.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STARTING = "starting"  # spawned, waiting for the health check
    RUNNING = "running"  # up and past its health check
    STOPPING = "stopping"  # signalled, waiting for it to exit
    STOPPED = "stopped"  # no process, by request or by a clean exit the policy accepts
    RESTARTING = "restarting"  # exited unexpectedly, waiting out the backoff
    CRASHED = "crashed"  # gave up: too many restarts, or a start that never got healthy


ALLOWED: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING, State.RUNNING}),  # RUNNING: adopting a live child
    State.STARTING: frozenset(
        {State.RUNNING, State.STOPPING, State.RESTARTING, State.CRASHED, State.STOPPED}
    ),
    State.RUNNING: frozenset({State.STOPPING, State.RESTARTING, State.CRASHED, State.STOPPED}),
    State.RESTARTING: frozenset({State.STARTING, State.STOPPED, State.CRASHED}),
    # From stopping: to stopped (a stop), starting (a restart), or, when the process was
    # stopped because it was unhealthy, to whatever the restart policy decides.
    State.STOPPING: frozenset({State.STOPPED, State.STARTING, State.RESTARTING, State.CRASHED}),
    State.CRASHED: frozenset({State.STARTING, State.STOPPED}),
}


class Desired(StrEnum):
    """What the operator asked for last, kept in the store: the formation is meant to run, or
    to stay stopped (a stop, a clean exit the policy accepts, a delete)."""

    RUNNING = "running"
    STOPPED = "stopped"


# States in which a formation meant to run is on its way (back) to serving: the proxy holds
# its requests meanwhile (`effects.ExpectRoute`).
COMING_BACK: frozenset[State] = frozenset({State.STARTING, State.RESTARTING, State.STOPPING})


class IllegalTransition(RuntimeError):
    pass


def check_transition(old: State, new: State) -> None:
    if new not in ALLOWED[old]:
        raise IllegalTransition(f"{old} -> {new} is not a legal transition")

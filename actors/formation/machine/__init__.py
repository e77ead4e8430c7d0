"""A formation's machine, sans I/O: what happens, decided without doing any of it.

`FormationMachine.handle(event, now)` takes one event (a numbered request, or the outcome of
an earlier effect) and returns the effects to carry out. Nothing in this package opens a
file, a socket, a process or a database, reads a clock or imports trio: the sans-I/O contract
in pyproject.toml checks the whole package, so it can be used and tested alone.

- `formation`: the machine itself; `lifecycle`: its states and legal transitions;
  `stopping`: what follows a stop; `requests`: the lifecycle requests it answers;
  `update`: the blue-green update's phases; `restart_policy`: restarts and backoff;
- `messages`: what it is asked and told; `effects`: what it asks; `views`: it, as JSON.
"""

from .formation import FormationMachine
from .lifecycle import State
from .messages import (
    CancelUpdate,
    CurrentVersion,
    EnsureRunning,
    Nodes,
    ProbeNow,
    Restart,
    Rollback,
    SearchTarget,
    Shutdown,
    Snapshot,
    Start,
    Stop,
    Update,
)
from .update import STDERR_TAIL_CHARS, Phase

__all__ = [
    "STDERR_TAIL_CHARS",
    "CancelUpdate",
    "CurrentVersion",
    "EnsureRunning",
    "FormationMachine",
    "Nodes",
    "Phase",
    "ProbeNow",
    "Restart",
    "Rollback",
    "SearchTarget",
    "Shutdown",
    "Snapshot",
    "Start",
    "State",
    "Stop",
    "Update",
]

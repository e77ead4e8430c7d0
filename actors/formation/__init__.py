"""A formation: one supervised program, its versions and its processes.

- `machine` (with `update` for the blue-green phases): what happens, as a pure state machine;
  `handle(event, now)` returns effects. No trio, no files, no store, no clock.
- `messages`: the requests it is asked and the outcomes it is told; `effects`: what it asks.
- `actor` (with `watchers` and `jobs`): the driver, the only part that does I/O.
- `views`: the formation as JSON for the API; `context`: what the fleet hands an actor.
"""

from supervisor.core.timestamps import rfc3339_now as now_rfc3339

from .actor import FormationActor
from .context import EventSink, FormationContext, Kept
from .jobs import DRAIN_BOUND_S
from .machine import FormationMachine
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
    "DRAIN_BOUND_S",
    "STDERR_TAIL_CHARS",
    "CancelUpdate",
    "CurrentVersion",
    "EnsureRunning",
    "EventSink",
    "FormationActor",
    "FormationContext",
    "FormationMachine",
    "Kept",
    "Nodes",
    "Phase",
    "ProbeNow",
    "Restart",
    "Rollback",
    "SearchTarget",
    "Shutdown",
    "Snapshot",
    "Start",
    "Stop",
    "Update",
    "now_rfc3339",
]

"""A formation: one supervised program, its versions and its processes.

- `machine/`: what happens, as a pure state machine (no trio, no files, no store, no clock);
  `handle(event, now)` returns effects. Importing this package loads nothing with I/O either:
  the driver is imported from its own modules.
- `actor` (with `watchers`, `jobs`, `processes` and `launch`): the driver, the only part that
  does I/O; `context`: what the fleet hands an actor, and what outlives one.

The requests a formation is asked are re-exported here, as the rest of fsup names them.
"""

from .machine import (
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

__all__ = [
    "CancelUpdate",
    "CurrentVersion",
    "EnsureRunning",
    "Nodes",
    "ProbeNow",
    "Restart",
    "Rollback",
    "SearchTarget",
    "Shutdown",
    "Snapshot",
    "Start",
    "Stop",
    "Update",
]

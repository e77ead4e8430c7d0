"""What the formation machine asks its driver to do. Pure data; the driver gives each meaning.

An effect that has an outcome (a spawn, a stop, a timer, a step of an update) is answered
later by an event carrying the same generation or job number (`messages`). Effects are
carried out in the order the machine lists them: the machine relies on it (the desired state
is persisted before the request is answered; a route is withdrawn before its process is
signalled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from supervisor.core.errors import FsupError
from supervisor.core.manifest import FormationSpec, HealthSpec, StopSpec

from .lifecycle import Desired

# -- requests and watchers of the operation ---------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The one answer to request `rid`: `value`, or `error` when it is set."""

    rid: int
    value: Any = None
    error: FsupError | None = None


@dataclass(frozen=True)
class Progress:
    """A progress event of request `rid` (a stage of the seed's lifecycle streams)."""

    rid: int
    event: dict[str, Any]


@dataclass(frozen=True)
class Publish:
    """An event on the bus (`formation_state_changed`, `formation_health_changed`, ...)."""

    type: str
    data: dict[str, Any]


LogLevel = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class Log:
    """A line of fsup's own log about this formation, at one of three fixed levels."""

    level: LogLevel
    message: str


@dataclass(frozen=True)
class EndActor:
    """Nothing is left to attend: end the actor once this message is handled."""


# -- processes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    """Start `spec` on `port`; answered at once by `Spawned` or `SpawnFailed` with `gen`.
    The active process's port is checked free first; a staging port was checked when the
    update's preparation chose it."""

    gen: int
    spec: FormationSpec
    version_dir: Path
    port: int


@dataclass(frozen=True)
class Watch:
    """Attend process `pid` under `gen`: its exit, and its health (gated first if `gate`)."""

    gen: int
    pid: int
    gate: bool
    health: HealthSpec
    port: int
    staging: bool = False


@dataclass(frozen=True)
class Unwatch:
    """Stop attending `pid`: its watchers' outcomes would be stale from now on."""

    pid: int


@dataclass(frozen=True)
class StopProcess:
    """Stop `pid` (signal, then SIGKILL after the timeout); `StopFinished(gen)` follows.
    `pid` None: nothing to stop, `StopFinished` follows all the same."""

    gen: int
    pid: int | None
    stop: StopSpec


@dataclass(frozen=True)
class Reap:
    """`pid` exited by itself: kill what is left of its group and sweep for strays."""

    pid: int | None


@dataclass(frozen=True)
class SweepStrays:
    """A stopped process may have left a descendant outside its group: sweep."""


@dataclass(frozen=True)
class ProbeOnce:
    """Health-check `pid` on `port` once, now; `ProbeResult(gen)` (or `PortTaken`) follows."""

    gen: int
    pid: int
    health: HealthSpec
    port: int


@dataclass(frozen=True)
class StartTimer:
    """`TimerFired(gen)` after `delay` seconds (the restart backoff)."""

    gen: int
    delay: float


@dataclass(frozen=True)
class CancelTimer:
    gen: int


# -- the store and the routing table -----------------------------------------------------


@dataclass(frozen=True)
class PersistDesired:
    desired: Desired


@dataclass(frozen=True)
class PersistProcess:
    pid: int | None
    started_at: float | None


@dataclass(frozen=True)
class PersistCurrent:
    """The formation's current version, port and process (a swap, an offline switch)."""

    version: str
    port: int
    pid: int | None
    started_at: float | None


@dataclass(frozen=True)
class PersistVersion:
    """An update's version joins the store (at its swap: a failed update leaves no trace)."""

    spec: FormationSpec
    manifest: bytes
    version_dir: Path


@dataclass(frozen=True)
class PublishRoute:
    """Route proxied requests to `pid` on `port`; the route it replaces is kept to drain."""

    port: int
    pid: int
    version: str


@dataclass(frozen=True)
class WithdrawRoute:
    pass


@dataclass(frozen=True)
class ExpectRoute:
    """Whether the route is coming back (the formation is meant to run and on its way: starting,
    restarting, or stopping to start again): the proxy then holds a request for it instead of
    answering 503 (issue 13). Emitted when it changes: first in its list when it turns true
    (before a route is withdrawn, so no request sees it gone for good), last when it turns false
    (after a new route is published, so none sees neither)."""

    coming_back: bool


@dataclass(frozen=True)
class MarkRouteHealthy:
    """The route's last good health check is now, and checks follow every `interval` seconds
    (inf: none follow): the routing summary calls a route stale after 3 missed checks."""

    interval: float


# -- an update or rollback (blue-green) ---------------------------------------------------


@dataclass(frozen=True)
class PrepareJob:
    """Install the version, carry runtime state over from `current_dir`, and if `live`
    choose a staging port and spawn the version there; `JobStaged` or `JobFailed` follows."""

    job: int
    kind: str
    spec: FormationSpec
    version_dir: Path
    staged_dir: Path | None
    current_dir: Path
    live: bool


@dataclass(frozen=True)
class Promote:
    """The staging process `pid` becomes the active one (the swap); `old_pid` retires."""

    pid: int
    old_pid: int | None


@dataclass(frozen=True)
class RetireOld:
    """Drain the replaced route (bounded), stop `pid`, give back `port`, prune old versions
    after an update; `OldRetired` follows."""

    job: int
    pid: int | None
    port: int | None
    stop: StopSpec
    prune: bool


@dataclass(frozen=True)
class CleanUpJob:
    """Undo a job that did not swap: cancel its preparation, stop its staging process, give
    back its port, remove an update's version; `JobCleaned` follows."""

    job: int
    stop: StopSpec
    remove_version: bool
    version: str
    version_dir: Path


Effect = (
    Answer
    | Progress
    | Publish
    | Log
    | EndActor
    | Spawn
    | Watch
    | Unwatch
    | StopProcess
    | Reap
    | SweepStrays
    | ProbeOnce
    | StartTimer
    | CancelTimer
    | PersistDesired
    | PersistProcess
    | PersistCurrent
    | PersistVersion
    | PublishRoute
    | WithdrawRoute
    | ExpectRoute
    | MarkRouteHealthy
    | PrepareJob
    | Promote
    | RetireOld
    | CleanUpJob
)

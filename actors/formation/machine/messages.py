"""What a formation is asked (requests) and what it is told (events the driver feeds back).

Requests come from the rest of fsup through the actor's mailbox. Events are outcomes of the
effects the machine asked for (a spawn, a watch, a timer, a stop, a step of an update),
carried back to `FormationMachine.handle`. Each process-related event carries the generation
it was issued under, so an outcome that arrives after its process was replaced is recognised
as stale and ignored. All are small frozen dataclasses: values, not objects with behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from supervisor.core.errors import FsupError
from supervisor.core.manifest import FormationSpec

from .lifecycle import Desired

# -- requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Start the process (deploy uses it too). Answered once healthy."""


@dataclass(frozen=True)
class Stop:
    """Stop the process; desired state becomes stopped. Answered once stopped."""


@dataclass(frozen=True)
class Restart:
    """Stop (if running) then start. Answered once healthy again."""


@dataclass(frozen=True)
class Snapshot:
    """The formation as the API shows it."""


@dataclass(frozen=True)
class CurrentVersion:
    """The current version and its folder (for a download)."""


@dataclass(frozen=True)
class SearchTarget:
    """What a search may read of this formation: its logs and, when running, its port."""


@dataclass(frozen=True)
class Nodes:
    """This formation's processes as nodes: the active one, and a staging one mid-update."""


@dataclass(frozen=True)
class ProbeNow:
    """Health-check the running process now (a routing refresh)."""


@dataclass(frozen=True)
class EnsureRunning:
    """Reconcile: start the formation if it is meant to run but has no process."""


@dataclass(frozen=True)
class Shutdown:
    """Stop the process without touching the desired state, then end the actor. The fleet
    sends it when fsup stops (`keep_desired`) and before a delete."""

    keep_desired: bool = True


@dataclass(frozen=True)
class Update:
    """Replace the running version with a staged, validated bundle, blue-green."""

    staged_dir: Path
    spec: FormationSpec
    manifest: bytes


@dataclass(frozen=True)
class Rollback:
    """Blue-green back to the version below the current one."""


@dataclass(frozen=True)
class CancelUpdate:
    """Abort an update or rollback that has not swapped yet."""


# -- what the driver hands the machine -----------------------------------------------------


@dataclass(frozen=True)
class Boot:
    """The actor incarnation begins: what the store wants, and a live process found in
    `Kept` (a restarted actor re-attaches to it instead of spawning a second one)."""

    desired: Desired
    adopted_pid: int | None


# The requests the machine answers itself (reads and updates are the driver's and `BeginJob`).
Request = Start | Stop | Restart | Shutdown | EnsureRunning | ProbeNow | CancelUpdate
MACHINE_REQUESTS = (Start, Stop, Restart, Shutdown, EnsureRunning, ProbeNow, CancelUpdate)


@dataclass(frozen=True)
class Requested:
    """A request, numbered by the driver so that the machine can answer it (`rid`)."""

    rid: int
    request: Request


@dataclass(frozen=True)
class JobTarget:
    """A version to stage, resolved by the driver: an update's staged bundle, or the stored
    version a rollback goes back to (`staged_dir` None, `manifest` None)."""

    kind: str  # "update" | "rollback"
    spec: FormationSpec
    version_dir: Path
    manifest: bytes | None
    staged_dir: Path | None


@dataclass(frozen=True)
class BeginJob:
    """An update or rollback request, its target already resolved."""

    rid: int
    target: JobTarget


# -- outcomes of effects ------------------------------------------------------------------


@dataclass(frozen=True)
class Spawned:
    gen: int
    pid: int
    started_at: float


@dataclass(frozen=True)
class SpawnFailed:
    """`error` is the refusal to report (PORT_IN_USE) or None; `message` says what failed."""

    gen: int
    message: str
    error: FsupError | None


@dataclass(frozen=True)
class Exited:
    gen: int
    returncode: int | None
    stderr_tail: str = ""


@dataclass(frozen=True)
class GateProgress:
    gen: int
    attempt: int
    max_attempts: int
    remaining_s: float
    last_error: str | None


@dataclass(frozen=True)
class GatePassed:
    gen: int


@dataclass(frozen=True)
class GateFailed:
    gen: int
    error: str
    stderr_tail: str = ""


@dataclass(frozen=True)
class ProbeResult:
    gen: int
    error: str | None


@dataclass(frozen=True)
class PortTaken:
    """A probe succeeded, but a process outside the formation listens on its port; `error`
    is the PORT_IN_USE the driver built (with the holders it saw)."""

    gen: int
    error: FsupError


@dataclass(frozen=True)
class TimerFired:
    gen: int


@dataclass(frozen=True)
class StopFinished:
    gen: int
    returncode: int | None


@dataclass(frozen=True)
class JobStaged:
    """The version is installed; `pid` is its staging process (None: nothing to run, the
    formation is not running)."""

    job: int
    pid: int | None
    port: int | None
    started_at: float | None = None


@dataclass(frozen=True)
class JobFailed:
    job: int
    error: FsupError


@dataclass(frozen=True)
class JobCleaned:
    job: int


@dataclass(frozen=True)
class OldRetired:
    job: int


# What a process's watchers report, under the generation they watch.
ProcessEvent = Exited | GateProgress | GatePassed | GateFailed | ProbeResult | PortTaken
PROCESS_EVENTS = (Exited, GateProgress, GatePassed, GateFailed, ProbeResult, PortTaken)
# What an update's I/O reports, under the job's number.
JobEvent = JobStaged | JobFailed | JobCleaned | OldRetired
JOB_EVENTS = (JobStaged, JobFailed, JobCleaned, OldRetired)
# Everything `FormationMachine.handle` takes: a closed union, so its dispatch is checked whole.
Event = (
    Requested
    | BeginJob
    | Boot
    | Spawned
    | SpawnFailed
    | ProcessEvent
    | TimerFired
    | StopFinished
    | JobEvent
)

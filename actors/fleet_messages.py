"""The messages the fleet answers (re-exported by `actors.fleet`, where callers import them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from supervisor.core.manifest import FormationSpec


@dataclass(frozen=True)
class Create:
    """Register a staged, validated formation and start it. Answered once it is healthy; a
    formation whose first start fails is removed again (nothing half-deployed remains)."""

    spec: FormationSpec
    staged_dir: Path
    manifest: bytes


@dataclass(frozen=True)
class Lookup:
    """A formation's actor. A read finds a formation being deleted until it is gone; a
    `change` of it is refused (`FORMATION_BUSY`: being deleted)."""

    formation_id: str
    change: bool = False


@dataclass(frozen=True)
class Describe:
    """`(actor, deleting)` of one formation, one being deleted included."""

    formation_id: str


@dataclass(frozen=True)
class ListFormations:
    """`(id, actor)` of the formations that are not being deleted."""


@dataclass(frozen=True)
class ListEntries:
    """`(id, actor, deleting)` of every formation, those being deleted included (reads)."""


@dataclass(frozen=True)
class Delete:
    formation_id: str


@dataclass(frozen=True)
class PortStatus:
    pass


@dataclass(frozen=True)
class Reconcile:
    """Kill processes of this home that no formation owns, and start formations that are
    meant to run but have no process."""


@dataclass(frozen=True)
class ShutdownAll:
    """Stop every formation gracefully, keeping the desired states for the next start."""


@dataclass(frozen=True)
class Restore:
    """Bring back the store's formations. The server sends it once it listens (children get
    the server's URL in MUXI_SERVER_URL); deploys are refused until it is done."""

    server_url: str

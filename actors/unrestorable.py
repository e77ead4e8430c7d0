"""UnrestorableFormation: the stand-in for a stored formation that cannot be brought back.

A formation whose stored version no longer loads (its formation.yaml fails validation after a
change of fsup, or the version row or folder is gone) must not vanish from the API, and above
all its files (`data/`, `memory.db`) must not be lost or its id reused by a deploy that would
overwrite them. The fleet keeps it listed through this actor, `crashed` with the reason. The
operator can see it, download it, update it (a new version is installed beside the old ones,
runtime state carried over, and the fleet replaces this actor with a real one and starts it),
retry a start, or delete it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from supervisor.core import version_order
from supervisor.core.errors import FsupError
from supervisor.core.timestamps import rfc3339_now as now_rfc3339
from supervisor.storage import versions
from supervisor.storage.store import FormationRow, VersionRow

from .base import DEFERRED, Actor, Reply
from .formation import (
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
from .formation.context import FormationContext

log = logging.getLogger("fsup.fleet")


@dataclass(frozen=True)
class Revive:
    """To the fleet: replace the unrestorable actor of `formation_id` with a real one loaded
    from the store and start it, answering `reply` with the start's outcome."""

    formation_id: str
    reply: Reply | None


class UnrestorableFormation(Actor):
    def __init__(self, ctx: FormationContext, row: FormationRow, reason: str) -> None:
        super().__init__()
        self.name = f"formation:{row.id}"
        self.ctx = ctx
        self.row = row
        self.reason = reason

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        match message:
            case Snapshot():
                return self.snapshot()
            case CurrentVersion():
                return self.row.current_version, self._version_dir()
            case Nodes():
                return []
            case ProbeNow() | EnsureRunning():
                return False
            case SearchTarget():
                return {
                    "formation_id": self.row.id,
                    "port": None,
                    "search_path": None,
                    "log_dir": self.ctx.home.formation_logs(self.row.id),
                }
            case Stop():
                self.ctx.store.set_desired(self.row.id, "stopped")
                return self._result("stopped")
            case Shutdown():
                self.stop_after_this_message()
                return self._result("crashed")
            case Start() | Restart():
                return await self._revive(reply)
            case Update():
                await self._install(message)
                return await self._revive(reply)
            case Rollback() | CancelUpdate():
                raise self._unusable(type(message).__name__.lower())
        raise FsupError("INVALID_REQUEST", f"unknown message {type(message).__name__}")

    async def _revive(self, reply: Reply | None) -> Any:
        """Hand over to the fleet, which stops this actor and starts the real one."""
        assert self.ctx.fleet is not None
        if reply is not None:
            self.hand_off(reply)
        self.stop_after_this_message()
        await self.ctx.fleet.tell(Revive(self.row.id, reply))
        return DEFERRED

    async def _install(self, message: Update) -> None:
        """Install the new version (keeping the runtime state) and make it current."""
        spec = message.spec
        if spec.id != self.row.id:
            raise FsupError(
                "INVALID_FORMATION",
                f"formation.yaml says id {spec.id!r}, but this is formation {self.row.id!r}",
                {"field": "id"},
            )
        if not _higher(spec.version, self.row.current_version):
            raise FsupError(
                "VERSION_NOT_HIGHER",
                f"version {spec.version} is not higher than the stored {self.row.current_version}",
                {"current_version": self.row.current_version, "version": spec.version},
            )
        target = self.ctx.home.version_dir(self.row.id, spec.version)
        source = self._version_dir()

        def install() -> None:
            versions.install(message.staged_dir, target)
            versions.carry_runtime_state(source, target)

        await trio.to_thread.run_sync(install)
        self.ctx.store.put_version(
            VersionRow(self.row.id, spec.version, message.manifest, str(target), now_rfc3339())
        )
        self.ctx.store.set_current(self.row.id, spec.version, self.row.port, None, None)
        self.ctx.store.set_desired(self.row.id, "running")
        log.info("%s: version %s installed over an unrestorable one", self.row.id, spec.version)

    def _version_dir(self) -> Path:
        stored = self.ctx.store.version(self.row.id, self.row.current_version)
        if stored is not None:
            return Path(stored.path)
        return self.ctx.home.version_dir(self.row.id, self.row.current_version)

    def _unusable(self, action: str) -> FsupError:
        return unusable(self.row.id, self.reason, action)

    def _result(self, status: str) -> dict[str, Any]:
        return {
            "formation_id": self.row.id,
            "status": status,
            "port": self.row.port,
            "version": self.row.current_version,
            "pid": None,
        }

    def snapshot(self) -> dict[str, Any]:
        row = self.ctx.store.formation(self.row.id) or self.row
        return {
            "id": row.id,
            "version": row.current_version,
            "description": "",
            "status": "crashed",
            "port": row.port,
            "pid": None,
            "healthy": False,
            "restart_count": 0,
            "uptime_s": None,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "desired": row.desired,
            "versions": [v.version for v in self.ctx.store.versions(row.id)],
            "update_in_progress": False,
            "last_exit_code": None,
            "last_error": f"could not be restored: {self.reason}",
        }


def unusable(formation_id: str, reason: str, action: str) -> FsupError:
    """The answer to what an unrestorable formation cannot do."""
    return FsupError(
        "INVALID_FORMATION",
        f"formation '{formation_id}' could not be restored ({reason}), so it cannot {action}; "
        f"deploy a fixed version with PUT /rpc/formations/{formation_id} or delete it",
        {"formation_id": formation_id, "reason": reason},
        status=409,
    )


def _higher(candidate: str, current: str) -> bool:
    if version_order.problem(current) is not None:
        return True  # the stored one is unreadable: any valid version replaces it
    return version_order.is_higher(candidate, current)

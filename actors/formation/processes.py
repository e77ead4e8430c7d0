"""The live processes of one formation, by pid, and the cancel scopes of their watchers.

A formation runs up to three processes at once (the active one, an update's staging one, and
the one an update retires), and the actor and its job runner both start, stop and forget
them. Neither reaches into the other for them: both are handed this registry. It decides
nothing (what runs is the machine's; when a handle is dropped is the caller's), it only keeps
the table so that a handle is dropped once and a watcher is cancelled once.
"""

from __future__ import annotations

import trio

from ..process import ProcessHandle


class ProcessRegistry:
    """Process handles by pid, and one cancel scope per attended pid."""

    def __init__(self) -> None:
        self._handles: dict[int, ProcessHandle] = {}
        self._watchers: dict[int, trio.CancelScope] = {}

    def add(self, process: ProcessHandle) -> None:
        self._handles[process.pid] = process

    def get(self, pid: int | None) -> ProcessHandle | None:
        """The handle of `pid`; None for an unknown pid or no pid at all."""
        return self._handles.get(pid) if pid is not None else None

    def pop(self, pid: int | None) -> ProcessHandle | None:
        """Forget `pid`'s handle (its process is stopped, or no longer ours) and return it."""
        return self._handles.pop(pid, None) if pid is not None else None

    def pids(self) -> frozenset[int]:
        """The pids whose handles are held (what the memory tests count)."""
        return frozenset(self._handles)

    def watch(self, pid: int) -> tuple[ProcessHandle, trio.CancelScope]:
        """`pid`'s handle and a new cancel scope for its watchers, kept until `unwatch(pid)`.
        A pid without a handle is a driver bug: KeyError."""
        process = self._handles[pid]
        scope = self._watchers[pid] = trio.CancelScope()
        return process, scope

    def unwatch(self, pid: int) -> None:
        """Cancel `pid`'s watchers, if it has any: their outcomes would be stale."""
        scope = self._watchers.pop(pid, None)
        if scope is not None:
            scope.cancel(reason="process no longer attended")

"""What a formation actor is given (`FormationContext`) and what outlives it (`Kept`)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from supervisor.core.manifest import HealthSpec, RestartSpec
from supervisor.runtime.metrics import Metrics
from supervisor.runtime.routing import RouteTable
from supervisor.storage.formation_logs import LogLimits
from supervisor.storage.home import Home
from supervisor.storage.store import Store

from ..base import ActorRef
from ..health import Probe
from ..listener import ListenerCheck, ProcListeners
from ..process import ProcessHandle
from ..spawn import Launcher


@dataclass
class Kept:
    """State that outlives an actor incarnation (the fleet holds it per formation)."""

    process: ProcessHandle | None = None
    restart_count: int = 0
    # Staging and retiring processes of an update: owned too, never strays.
    extra_pids: set[int] = field(default_factory=set)
    # Spawns in flight: their process may exist before it is recorded above, so the fleet's
    # reconcile spares every process of a formation that is spawning (`StraySweeper`).
    spawning: int = 0


class EventSink(Protocol):
    """Where formation events go: the event bus, or a test's recorder. Never blocks."""

    def publish(self, type_: str, data: dict[str, Any], search_id: str | None = None) -> object: ...


@dataclass
class FormationContext:
    """Services the fleet hands every formation actor."""

    home: Home
    store: Store
    launcher: Launcher
    probe_for: Callable[[HealthSpec], Probe]
    server_url: str
    rng: random.Random = field(default_factory=random.Random)
    routes: RouteTable = field(default_factory=RouteTable)
    # The fleet, for ports beyond the first (set by the fleet when it starts).
    fleet: ActorRef | None = None
    restart_defaults: RestartSpec = field(default_factory=RestartSpec)
    log_limits: LogLimits = field(default_factory=LogLimits)
    listeners: ListenerCheck = field(default_factory=ProcListeners)
    # Kills what outlived an exited process outside its group (None: `process.kill_strays`).
    kill_strays: Callable[[Path, str | None, frozenset[int], Callable[[], bool]], int] | None = None
    # The event bus (`supervisor.runtime.events.EventBus`); None in unit tests that do not listen.
    events: EventSink | None = None
    # Restarts by reason, counted as the formation announces them (the server shares it
    # with its HTTP edge, which serves `/metrics`).
    metrics: Metrics = field(default_factory=Metrics)

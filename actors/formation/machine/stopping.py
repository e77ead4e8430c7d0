"""What follows a stop: the plan a formation stops under, replaced when a later request
changes its mind (a restart during a stop, a shutdown during a restart)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class After(Enum):
    """What follows once the process being stopped is gone."""

    STOPPED = "stopped"  # an operator stop
    START = "start"  # a restart request
    FAILURE = "failure"  # it was unhealthy: apply the restart policy
    CRASHED = "crashed"  # a requested start failed its health check
    EXIT = "exit"  # shutdown or delete: end the actor


@dataclass(frozen=True)
class StopPlan:
    then: After
    reason: str  # the reason of the transitions out of STOPPING

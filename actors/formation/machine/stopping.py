"""What follows a stop: the plan a formation stops under, replaced when a later request
changes its mind (a restart during a stop, a shutdown during a restart) as `REPLANS` allows."""

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


# The plans a later request may put in place of the one a stop runs under. An exit's is
# final (only another exit, a delete after a shutdown, may restate it): the actor always ends.
REPLANS: dict[After, frozenset[After]] = {
    After.STOPPED: frozenset({After.STOPPED, After.START, After.EXIT}),
    After.START: frozenset({After.STOPPED, After.START, After.EXIT}),
    After.FAILURE: frozenset({After.STOPPED, After.START, After.EXIT}),
    After.CRASHED: frozenset({After.STOPPED, After.START, After.EXIT}),
    After.EXIT: frozenset({After.EXIT}),
}


class IllegalReplan(RuntimeError):
    pass


@dataclass(frozen=True)
class StopPlan:
    then: After
    reason: str  # the reason of the transitions out of STOPPING

    def replaced_by(self, then: After, reason: str) -> StopPlan:
        """The plan a later request puts in place of this one, checked against `REPLANS`."""
        if then not in REPLANS[self.then]:
            raise IllegalReplan(f"a stop to {self.then.value} cannot become one to {then.value}")
        return StopPlan(then, reason)

"""When and how soon to restart a process that exited: pure logic, no clocks of its own.

Exponential backoff with jitter (`initial * factor**n`, capped at `max`, then spread by
`±jitter`), reset once a process has stayed up and healthy for `reset_after` seconds, and a
give-up rule: more than `max_restarts` restarts within `window` seconds and the formation is
`crashed`. Times are passed in so that tests drive it with exact numbers.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from supervisor.core.manifest import RestartSpec


@dataclass(frozen=True)
class Decision:
    restart: bool
    delay: float = 0.0
    give_up: bool = False
    reason: str = ""


def wants_restart(policy: str, returncode: int | None) -> bool:
    """`returncode` None means unknown (an adopted process): count it as a failure."""
    if policy == "always":
        return True
    if policy == "on-failure":
        return returncode != 0
    return False


class RestartTracker:
    def __init__(self, spec: RestartSpec, rng: random.Random | None = None) -> None:
        self.spec = spec
        self._rng = rng or random.Random()
        self._attempt = 0
        self._restarts: deque[float] = deque()

    @property
    def attempt(self) -> int:
        """Consecutive restarts since the last reset (what the next backoff is based on)."""
        return self._attempt

    def next_delay(self) -> float:
        backoff = self.spec.backoff
        base = min(backoff.max, backoff.initial * backoff.factor**self._attempt)
        spread = base * backoff.jitter
        return max(0.0, base + self._rng.uniform(-spread, spread))

    def healthy_since(self, since: float | None, now: float) -> None:
        """Forget past failures once a process has been healthy for `reset_after`."""
        if since is not None and now - since >= self.spec.reset_after:
            self._attempt = 0

    def on_exit(self, returncode: int | None, now: float, healthy_since: float | None) -> Decision:
        """Decide what follows an unexpected exit (or a failed health check) at `now`."""
        self.healthy_since(healthy_since, now)
        if not wants_restart(self.spec.policy, returncode):
            return Decision(False, reason=f"policy {self.spec.policy} does not restart it")
        while self._restarts and self._restarts[0] <= now - self.spec.window:
            self._restarts.popleft()
        if len(self._restarts) >= self.spec.max_restarts:
            return Decision(
                False,
                give_up=True,
                reason=(
                    f"restarted {len(self._restarts)} times within {self.spec.window:g}s "
                    f"(max_restarts {self.spec.max_restarts}); giving up"
                ),
            )
        delay = self.next_delay()
        self._attempt += 1
        self._restarts.append(now)
        return Decision(True, delay=delay, reason=f"restart #{self._attempt} in {delay:.2f}s")

    def reset(self) -> None:
        """An operator's start/restart wipes the slate."""
        self._attempt = 0
        self._restarts.clear()

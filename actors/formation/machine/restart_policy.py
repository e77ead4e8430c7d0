"""When and how soon to restart a process that exited: pure logic, no clocks of its own.

The first restart after a stable run is immediate: a process that was up and healthy for at
least `STABLE_RUN_S` and then died is most likely hit by a one-off (a kill, an OOM, a bug on a
rare path), and every moment of backoff is a moment its users get errors. Repeated crashes
get exponential backoff with jitter (`initial * factor**n`, capped at `max`, then spread by
`±jitter`): `initial` from the second consecutive crash on (from the first when the process
never ran stably: it crashes as it starts, and hammering it helps no one). The streak resets
once a process has stayed up and healthy for `reset_after` seconds. A give-up rule: more than
`max_restarts` restarts within `window` seconds and the formation is `crashed`. Times are
passed in so that tests drive it with exact numbers.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from supervisor.core.manifest import RestartSpec

# Healthy this long before it exited: a stable run, whose first restart waits for nothing (as
# PM2's `min_uptime`, 1 s by default, tells a stable exit from a crash loop).
STABLE_RUN_S = 1.0


@dataclass(frozen=True)
class Decision:
    restart: bool
    delay: float = 0.0
    give_up: bool = False
    reason: str = ""
    restarts: int = 0  # within the window when this was decided (a give-up reports it)


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
        self._free = 0  # 1 when the current streak began with an immediate restart
        self._restarts: deque[float] = deque()

    @property
    def attempt(self) -> int:
        """Consecutive restarts since the last reset (what the next backoff is based on)."""
        return self._attempt

    def next_delay(self) -> float:
        """The backoff of the next restart of a streak (the immediate one not counted)."""
        backoff = self.spec.backoff
        base = min(backoff.max, backoff.initial * backoff.factor ** (self._attempt - self._free))
        spread = base * backoff.jitter
        return max(0.0, base + self._rng.uniform(-spread, spread))

    def healthy_since(self, since: float | None, now: float) -> None:
        """Forget past failures once a process has been healthy for `reset_after`."""
        if since is not None and now - since >= self.spec.reset_after:
            self._attempt = self._free = 0

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
                restarts=len(self._restarts),
                reason=(
                    f"restarted {len(self._restarts)} times within {self.spec.window:g}s "
                    f"(max_restarts {self.spec.max_restarts}); giving up"
                ),
            )
        if self._attempt == 0 and healthy_since is not None and now - healthy_since >= STABLE_RUN_S:
            delay, self._free = 0.0, 1  # the first crash after a stable run
        else:
            delay = self.next_delay()
        self._attempt += 1
        self._restarts.append(now)
        return Decision(True, delay=delay, reason=f"restart #{self._attempt} in {delay:.2f}s")

    def reset(self) -> None:
        """An operator's start/restart wipes the slate."""
        self._attempt = self._free = 0
        self._restarts.clear()

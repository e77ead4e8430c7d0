"""The waiting a formation does, as background tasks that only post events back.

A process's exit, its health gate (a countdown until its first good check), its periodic
probes and the restart backoff all wait here, in the actor's nursery, never in its message
loop: a `stop` sent during a 60 s health gate is handled at once. Each task posts outcomes
tagged with the generation it was started under, and the machine ignores those that are stale.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from supervisor.core.errors import FsupError
from supervisor.core.manifest import HealthSpec

from ..health import PortTaken as PortTakenError
from ..health import Probe
from ..process import ProcessHandle
from .messages import (
    Exited,
    GateFailed,
    GatePassed,
    GateProgress,
    PortTaken,
    ProbeResult,
    TimerFired,
)

Post = Callable[[Any], Awaitable[None]]
# Builds the PORT_IN_USE error of a probe that found a stranger on the port.
Taken = Callable[[PortTakenError], FsupError]


async def watch_exit(post: Post, gen: int, process: ProcessHandle) -> None:
    returncode = await process.wait()
    await post(Exited(gen, returncode, process.stderr_tail()))


async def watch_health(
    post: Post,
    gen: int,
    gate: bool,
    health: HealthSpec,
    port: int,
    probe: Probe,
    process: ProcessHandle,
    taken: Taken,
) -> None:
    """Gate (if asked), then keep checking, even with no probe declared (then being alive is
    being healthy): the routing summary tells stale routes by the age of their last check."""
    try:
        if gate and not await _gate(post, gen, health, probe, port, process):
            return
        while True:
            await trio.sleep(health.interval)
            await post(ProbeResult(gen, await probe.check(port)))
    except PortTakenError as exc:
        await post(PortTaken(gen, taken(exc)))


async def probe_once(post: Post, gen: int, probe: Probe, port: int, taken: Taken) -> None:
    try:
        await post(ProbeResult(gen, await probe.check(port)))
    except PortTakenError as exc:
        await post(PortTaken(gen, taken(exc)))


async def _gate(
    post: Post, gen: int, health: HealthSpec, probe: Probe, port: int, process: ProcessHandle
) -> bool:
    """Wait until the new process is healthy; report a countdown on the way."""
    if health.kind == "process":
        await post(GateProgress(gen, 1, 1, health.stay_up, None))
        await trio.sleep(health.stay_up)
        await post(GatePassed(gen))
        return True
    deadline = trio.current_time() + health.timeout
    max_attempts = max(1, int(health.timeout / health.interval) + 1)
    error: str | None = None
    for attempt in range(1, max_attempts + 1):
        remaining = max(0.0, deadline - trio.current_time())
        await post(GateProgress(gen, attempt, max_attempts, round(remaining, 2), error))
        with trio.move_on_at(deadline):
            error = await probe.check(port)
            if error is None:
                await post(GatePassed(gen))
                return True
        if trio.current_time() >= deadline:
            break
        await trio.sleep_until(min(deadline, trio.current_time() + health.interval))
    why = f"not healthy after {health.timeout:g}s (last error: {error})"
    await post(GateFailed(gen, why, process.stderr_tail()))
    return False


async def fire_after(post: Post, gen: int, delay: float) -> None:
    await trio.sleep(delay)
    await post(TimerFired(gen))

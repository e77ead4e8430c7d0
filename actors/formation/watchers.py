"""The waiting a formation does, as background tasks that only post events back.

A process's exit, its health gate (a countdown until its first good check), its periodic
probes and the restart backoff all wait here, in the actor's nursery, never in its message
loop: a `stop` sent during a 60 s health gate is handled at once. Each task posts outcomes
tagged with the generation it was started under, and the machine ignores those that are stale.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from supervisor.core.errors import FsupError
from supervisor.core.manifest import HealthSpec
from supervisor.core.ticks import next_on_grid

from ..health import PortTaken as PortTakenError
from ..health import Probe, close_probe
from ..process import ProcessHandle
from .machine.messages import (
    Exited,
    GateFailed,
    GatePassed,
    GateProgress,
    JobCleaned,
    JobFailed,
    JobStaged,
    OldRetired,
    PortTaken,
    ProbeResult,
    StopFinished,
    TimerFired,
)

# What the driver's background tasks post back into the actor's mailbox, for the machine: the
# outcomes of watchers, timers, stops and the steps of an update.
Posted = (
    Exited
    | GateProgress
    | GatePassed
    | GateFailed
    | ProbeResult
    | PortTaken
    | TimerFired
    | StopFinished
    | JobStaged
    | JobFailed
    | JobCleaned
    | OldRetired
)
Post = Callable[[Posted], Awaitable[None]]
# The start gate's probes: the first gap, then a quarter of the time since the spawn (so a
# service is routed within a quarter of the time it took to answer, and a slow one costs a
# probe per 25 % of its start-up), up to `health.interval`; and never more than
# `GATE_PROBES_PER_S` probes a second over every gate in flight (100 formations starting at
# once on 2 cores must not spend a core on refused connects).
FIRST_GAP_S = 0.005
GAP_GROWTH = 0.25
GATE_PROBES_PER_S = 300.0
_gates = 0  # gates in flight, over every formation
# Builds the PORT_IN_USE error of a probe that found a stranger on the port.
Taken = Callable[[PortTakenError], FsupError]


async def watch_exit(post: Post, gen: int, process: ProcessHandle) -> None:
    returncode = await process.wait()
    await post(Exited(gen, returncode, await process.stderr_tail()))


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
    """Gate (if asked; else, for an adopted process, one check at once), then check every
    `health.liveness_period` (every `health.interval` while checks fail). Nothing at all when
    there are no checks to make (no probe declared, or liveness off): the process's exit is
    watched apart, and no formation wakes fsup when nothing happens."""
    try:
        if gate and not await _gate(post, gen, health, probe, port, process):
            return
        period = health.liveness_period
        if period <= 0:
            return
        error: str | None = None
        if not gate:
            error = await probe.check(port)
            await post(ProbeResult(gen, error))
        while True:
            if error is None:
                await sleep_on_grid(period)
            else:
                await trio.sleep(min(health.interval, period))
            error = await probe.check(port)
            await post(ProbeResult(gen, error))
    except PortTakenError as exc:
        await post(PortTaken(gen, taken(exc)))
    finally:
        close_probe(probe)


async def sleep_on_grid(period: float) -> None:
    """Sleep about `period`, until a multiple of it on trio's clock: every formation checked
    at that period is then checked in the same wake-up of fsup (`supervisor.core.ticks`)."""
    await trio.sleep_until(next_on_grid(trio.current_time(), period))


async def probe_once(post: Post, gen: int, probe: Probe, port: int, taken: Taken) -> None:
    try:
        await post(ProbeResult(gen, await probe.check(port)))
    except PortTakenError as exc:
        await post(PortTaken(gen, taken(exc)))
    finally:
        close_probe(probe)


async def _gate(
    post: Post, gen: int, health: HealthSpec, probe: Probe, port: int, process: ProcessHandle
) -> bool:
    """Wait until the new process is healthy; report a countdown on the way, one step per
    `health.interval`. Within those steps the probe runs early and often (`gate_gap`): a
    service that answers 60 ms after its spawn is routed a few ms later, and one that takes
    seconds costs a probe per quarter of the time waited (a refused connect is one system
    call)."""
    if health.kind == "process":
        await post(GateProgress(gen, 1, 1, health.stay_up, None))
        await trio.sleep(health.stay_up)
        await post(GatePassed(gen))
        return True
    global _gates
    _gates += 1
    try:
        return await probe_until_healthy(post, gen, health, probe, port, process)
    finally:
        _gates -= 1


def gate_gap(elapsed: float, interval: float, gates: int) -> float:
    """The wait before the next probe of a start gate, `elapsed` seconds after the spawn,
    with `gates` gates in flight."""
    return min(interval, max(FIRST_GAP_S, elapsed * GAP_GROWTH, gates / GATE_PROBES_PER_S))


async def probe_until_healthy(
    post: Post, gen: int, health: HealthSpec, probe: Probe, port: int, process: ProcessHandle
) -> bool:
    started = trio.current_time()
    deadline = started + health.timeout
    max_attempts = max(1, int(health.timeout / health.interval) + 1)
    error: str | None = None
    for attempt in range(1, max_attempts + 1):
        tick = trio.current_time()
        remaining = max(0.0, deadline - tick)
        await post(GateProgress(gen, attempt, max_attempts, round(remaining, 2), error))
        next_tick = min(deadline, tick + health.interval)
        passed = False
        with trio.move_on_at(deadline):
            while True:
                error = await probe.check(port)
                if error is None:
                    passed = True
                    break
                now = trio.current_time()
                gap = gate_gap(now - started, health.interval, _gates)
                if now + gap >= next_tick:
                    break
                await trio.sleep(gap)
        if passed:
            # Posted outside the deadline: a post that waits for room in a full mailbox at
            # the deadline must not turn a healthy start into a failed one.
            await post(GatePassed(gen))
            return True
        now = trio.current_time()
        if now >= deadline:
            break
        # A probe that took longer than the interval (a hung listener) is not followed by
        # another at once.
        await trio.sleep_until(
            min(deadline, next_tick if now < next_tick else now + health.interval)
        )
    why = f"not healthy after {health.timeout:g}s (last error: {error})"
    await post(GateFailed(gen, why, await process.stderr_tail()))
    return False


async def fire_after(post: Post, gen: int, delay: float) -> None:
    await trio.sleep(delay)
    await post(TimerFired(gen))

"""One-for-one supervision: restart a child actor that died with an exception.

The supervisor, not the actor, owns each child's mailbox, so the `ActorRef` callers hold stays
valid across restarts and messages queued behind a crash are handled by the next incarnation.
Only the request being handled when the child crashed fails (with `ActorCrashed`).

A child that crashes more than `max_restarts` times within `period` seconds is not restarted
again: the supervisor raises `Escalation`, which cancels its nursery and reaches its own
parent, as in Erlang/OTP. The root actors (the fleet, the searches) have no parent to escalate
to but fsup itself, and fsup must not exit because of what a client sent: their intensity says
`escalate=False`, and past the limit the supervisor waits `period` seconds before the next
restart instead. A child whose `run` returns normally has finished and is not restarted; nor
is one whose `may_restart` says no when it crashes (a formation being deleted: its removal,
not a fresh incarnation read from a store row about to go, decides what happens next).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .base import MAILBOX_SIZE, Actor, ActorRef, ActorUnavailable, Envelope, drain_mailbox

log = logging.getLogger("fsup.supervision")


@dataclass(frozen=True)
class Intensity:
    max_restarts: int = 5
    period: float = 10.0
    # False: past the limit, pause for `period` and restart again rather than escalate.
    escalate: bool = True


class Escalation(Exception):
    """A child crashed too often; its supervisor gives up and fails upward."""

    def __init__(self, child: str, crashes: int, period: float) -> None:
        super().__init__(f"{child} crashed {crashes} times within {period:g}s; escalating")
        self.child = child


class Supervisor:
    def __init__(self, nursery: trio.Nursery, intensity: Intensity = Intensity()) -> None:
        self._nursery = nursery
        self.intensity = intensity
        self.restarts: dict[str, int] = {}

    async def start(
        self,
        name: str,
        factory: Callable[[], Actor],
        size: int = MAILBOX_SIZE,
        may_restart: Callable[[], bool] = lambda: True,
    ) -> ActorRef:
        """Start a child made by `factory` (called again for each restart while `may_restart`
        says so); return its ref once its first incarnation accepts messages."""
        send, receive = trio.open_memory_channel[Envelope](size)
        ref = ActorRef(name, send)
        await self._nursery.start(self._supervise, ref, (factory, may_restart), send, receive)
        return ref

    async def _supervise(
        self,
        ref: ActorRef,
        make: tuple[Callable[[], Actor], Callable[[], bool]],
        send: trio.MemorySendChannel[Envelope],
        receive: trio.MemoryReceiveChannel[Envelope],
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        factory, may_restart = make
        crashes: deque[float] = deque()
        status: trio.TaskStatus[None] = task_status
        self.restarts.setdefault(ref.name, 0)
        with send, receive:
            try:
                while True:
                    actor = factory()
                    try:
                        await actor.run(ref, receive, task_status=status)
                        return
                    except Exception:
                        if not actor.accepting and status is task_status:
                            raise  # never started: the caller of start() gets the error
                        if not may_restart():
                            log.exception("actor %s crashed; not restarted (ending)", ref.name)
                            return
                        log.exception("actor %s crashed; restarting it", ref.name)
                        if self._count_crash(ref.name, crashes):
                            log.error(
                                "actor %s crashes too often; next restart in %gs",
                                ref.name,
                                self.intensity.period,
                            )
                            await trio.sleep(self.intensity.period)
                    status = trio.TASK_STATUS_IGNORED
            finally:
                drain_mailbox(receive, ActorUnavailable(f"{ref.name} has stopped"))
                # A child that ended leaves nothing: one entry per search run ever started
                # (or formation ever deleted) would otherwise stay for fsup's lifetime.
                self.restarts.pop(ref.name, None)

    def _count_crash(self, name: str, crashes: deque[float]) -> bool:
        """Count a crash; True when the limit is passed and the restart should wait."""
        now = trio.current_time()
        crashes.append(now)
        while crashes and crashes[0] < now - self.intensity.period:
            crashes.popleft()
        self.restarts[name] = self.restarts.get(name, 0) + 1
        if len(crashes) <= self.intensity.max_restarts:
            return False
        if self.intensity.escalate:
            raise Escalation(name, len(crashes), self.intensity.period)
        crashes.clear()
        return True

"""The actor base: a task with a bounded mailbox that handles one message at a time.

An actor's state is touched only by its own message loop, so it needs no locks. Callers hold an
`ActorRef`: `tell` posts a message, `ask` posts it with a one-request reply channel and waits
for the answer (the caller owns the timeout: wrap it in `trio.fail_after`). A request may also
stream progress events before its answer (`ActorRef.request` / `Call`), which is how a deploy
reports its stages.

Long operations never block the loop: a handler may start work in the actor's nursery and
return `DEFERRED`, keeping the `Reply` to answer later. Every reply is tracked, and when an
actor ends (normally, by crashing or by cancellation) every reply still open is failed, so no
caller is ever left waiting on an actor that is gone.

Errors: an `FsupError` raised by a handler is the asker's answer and the actor carries on; any
other exception is a bug, the asker gets `ActorCrashed` and the actor dies so that its
supervisor can restart it from a clean state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import outcome
import trio

from supervisor.core.errors import FsupError

from . import faults

log = logging.getLogger("fsup.actors")

MAILBOX_SIZE = 64
# Progress events buffered per request; the last slot is kept for the answer itself.
REPLY_BUFFER = 64


class ActorError(Exception):
    """The request could not be handled by the actor."""


class ActorUnavailable(ActorError):
    """The actor has stopped (or is stopping) and will not answer."""


class ActorCrashed(ActorError):
    """The actor died with an unexpected exception while handling the request."""


class _Deferred:
    def __repr__(self) -> str:
        return "DEFERRED"


#: Returned by a handler that keeps the `Reply` to answer later.
DEFERRED: Any = _Deferred()


@dataclass(frozen=True)
class Progress:
    """One progress event of a request, sent before its answer."""

    event: dict[str, Any]


class Reply:
    """The future answer to one request, plus a best-effort stream of progress events.

    Only the owning actor writes to it, always with `send_nowait`: an actor never waits for a
    caller. A caller that went away (cancelled, disconnected) is simply not told.
    """

    def __init__(self, channel: trio.MemorySendChannel[Any]) -> None:
        self._channel = channel
        self._watchers: list[Any] = []
        self.done = False

    def emit(self, event: dict[str, Any]) -> None:
        """Send a progress event, dropping it if the caller is not keeping up."""
        if self.done:
            return
        stats = self._channel.statistics()
        if stats.current_buffer_used >= stats.max_buffer_size - 1:
            return
        try:
            self._channel.send_nowait(Progress(event))
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
            pass

    def resolve(self, value: Any) -> None:
        self._finish(outcome.Value(value))

    def fail(self, error: BaseException) -> None:
        self._finish(outcome.Error(error))

    def on_done(self, callback: Any) -> None:
        self._watchers.append(callback)

    def _finish(self, result: outcome.Outcome[Any]) -> None:
        if self.done:
            return
        self.done = True
        try:
            self._channel.send_nowait(result)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
            pass
        self._channel.close()
        for callback in self._watchers:
            callback(self)


@dataclass(frozen=True)
class Envelope:
    message: Any
    reply: Reply | None


class Call:
    """The caller's side of one request: progress events, then the answer."""

    def __init__(self, channel: trio.MemoryReceiveChannel[Any]) -> None:
        self._channel = channel
        self._result: outcome.Outcome[Any] | None = None

    async def next(self) -> Progress | outcome.Outcome[Any]:
        """The next item: a `Progress`, or the answer's outcome (then `result()` is ready).
        Safe to cancel: nothing is lost if a timeout interrupts the wait."""
        if self._result is not None:
            return self._result
        item = await self._receive()
        if not isinstance(item, Progress):
            self._result = item
        return item  # type: ignore[no-any-return]

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Yield progress events until the answer arrives (then `result()` is ready)."""
        while self._result is None:
            item = await self._receive()
            if isinstance(item, Progress):
                yield item.event
            else:
                self._result = item

    async def result(self) -> Any:
        """Wait for the answer, skipping progress; raise the actor's error if it failed."""
        async for _ in self.progress():
            pass
        assert self._result is not None
        return self._result.unwrap()

    async def _receive(self) -> Any:
        try:
            return await self._channel.receive()
        except trio.EndOfChannel:
            return outcome.Error(ActorUnavailable("the actor stopped without answering"))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Call:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ActorRef:
    """How the rest of the program talks to an actor. Stays valid across restarts."""

    def __init__(self, name: str, mailbox: trio.MemorySendChannel[Envelope]) -> None:
        self.name = name
        self._mailbox = mailbox

    def __repr__(self) -> str:
        return f"<ActorRef {self.name}>"

    async def tell(self, message: Any) -> None:
        """Post a message, waiting for mailbox space; no answer."""
        await self._send(Envelope(message, None))

    def tell_nowait(self, message: Any) -> None:
        """Post a message or raise `trio.WouldBlock` when the mailbox is full."""
        try:
            self._mailbox.send_nowait(Envelope(message, None))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ActorUnavailable(f"{self.name} has stopped") from None

    async def request(self, message: Any) -> Call:
        """Post a request and return its `Call` (use it in a `with` block)."""
        send, receive = trio.open_memory_channel[Any](REPLY_BUFFER)
        call = Call(receive)
        try:
            await self._send(Envelope(message, Reply(send)))
        except BaseException:
            call.close()
            send.close()
            raise
        return call

    async def ask(self, message: Any) -> Any:
        """Post a request and wait for its answer. The caller owns the timeout."""
        with await self.request(message) as call:
            return await call.result()

    async def _send(self, envelope: Envelope) -> None:
        try:
            await self._mailbox.send(envelope)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ActorUnavailable(f"{self.name} has stopped") from None


def fail_envelope(envelope: Envelope, error: BaseException) -> None:
    if envelope.reply is not None:
        envelope.reply.fail(error)


class Actor:
    """Subclass and implement `handle`. Run with `spawn` or under a `Supervisor`."""

    name: str = "actor"

    def __init__(self) -> None:
        self.ref: ActorRef | None = None
        self.nursery: trio.Nursery | None = None
        self._open_replies: set[Reply] = set()
        self._stop_requested = False
        # True once the actor has told its starter it accepts messages.
        self.accepting = False

    async def on_start(self) -> None:
        """Runs before the first message, inside the actor's nursery."""

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        """Handle one message; return the answer, or `DEFERRED` to answer via `reply` later."""
        raise NotImplementedError

    def hand_off(self, reply: Reply) -> None:
        """Another actor answers `reply` from now on: this one's end no longer fails it."""
        self._open_replies.discard(reply)

    def stop_after_this_message(self) -> None:
        """End the message loop once the current message is handled (a normal exit)."""
        self._stop_requested = True

    async def run(
        self,
        ref: ActorRef,
        mailbox: trio.MemoryReceiveChannel[Envelope],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the mailbox until asked to stop or the mailbox closes."""
        self.ref = ref
        error: BaseException = ActorUnavailable(f"{self.name} stopped")
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self.on_start()
                task_status.started()
                self.accepting = True
                while not self._stop_requested:
                    try:
                        envelope = await mailbox.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        break
                    await self._dispatch(envelope)
                nursery.cancel_scope.cancel(reason=f"{self.name} finished")
        except Exception as exc:
            error = ActorCrashed(f"{self.name} crashed: {exc!r}")
            raise
        finally:
            for reply in list(self._open_replies):
                reply.fail(error)

    async def _dispatch(self, envelope: Envelope) -> None:
        reply = envelope.reply
        if reply is not None:
            self._open_replies.add(reply)
            reply.on_done(self._open_replies.discard)
        try:
            if faults.ENABLED:
                faults.trip(self.name)
            result = await self.handle(envelope.message, reply)
        except FsupError as exc:
            if reply is not None:
                reply.fail(exc)
            else:
                log.warning("%s: %s (no one asked)", self.name, exc.message)
            return
        if reply is not None and result is not DEFERRED:
            reply.resolve(result)


async def spawn(
    nursery: trio.Nursery, actor: Actor, name: str | None = None, size: int = MAILBOX_SIZE
) -> ActorRef:
    """Start an unsupervised actor in `nursery`; return its ref once it accepts messages."""
    send, receive = trio.open_memory_channel[Envelope](size)
    ref = ActorRef(name or actor.name, send)

    async def lifetime(*, task_status: trio.TaskStatus[None]) -> None:
        with send, receive:
            try:
                await actor.run(ref, receive, task_status=task_status)
            finally:
                drain_mailbox(receive, ActorUnavailable(f"{ref.name} has stopped"))

    await nursery.start(lifetime)
    return ref


def drain_mailbox(mailbox: trio.MemoryReceiveChannel[Envelope], error: BaseException) -> None:
    """Fail every request still queued for an actor that will not run again."""
    while True:
        try:
            envelope = mailbox.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
        fail_envelope(envelope, error)

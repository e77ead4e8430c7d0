"""The event bus: one stream of events for everything, with monotonic ids.

Publishing never waits: each subscriber has its own bounded channel filled with `send_nowait`,
and a subscriber that cannot keep up is sent an `overflow` notice in the slot kept for it and
dropped (it can reconnect with `Last-Event-ID` and resume from the history, or re-fetch
snapshots). A bounded history of recent events serves those resumes; a resume from further
back than the history reaches starts with a `reset` notice, so the client knows to re-fetch.

The history is bounded twice, by events and by their JSON bytes: counted in events alone, a
history of large events (a `status` of a big fleet, a search hit with a long line) held many
megabytes, and it filled for many minutes of churn before it plateaued, which looked like a
leak (issue 17). Periodic snapshots (`SNAPSHOTS`: status, routing and traffic figures, a
search's progress) are not kept in that record at all: each supersedes the one before, so
only the latest of each (per search) is kept and replayed, in id order with the rest.
"""

from __future__ import annotations

import itertools
import json
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import trio

from supervisor.core.timestamps import rfc3339_now

HISTORY = 1000
# At most this many bytes of JSON envelopes in the history (about 4x that in Python objects).
HISTORY_BYTES = 256 * 1024
# Events that each supersede the previous one of their type (and search): only the latest is
# kept for resumes, up to MAX_SNAPSHOTS of them (a deleted search's are forgotten at once).
SNAPSHOTS = frozenset(
    {"status", "routing_stats", "traffic_stats", "search_progress", "search_stats"}
)
MAX_SNAPSHOTS = 64
# Every event stream (the bus, /rpc progress, followed logs) sends a comment after this long
# without an event, so proxies keep the connection and clients know the server is alive.
HEARTBEAT_S = 15.0
SUBSCRIBER_BUFFER = 256


@dataclass(frozen=True)
class BusEvent:
    id: int
    type: str
    ts: str
    search_id: str | None
    data: dict[str, Any] = field(default_factory=dict)

    def envelope(self) -> dict[str, Any]:
        """The seed's event envelope."""
        return {"type": self.type, "ts": self.ts, "search_id": self.search_id, "data": self.data}

    @cached_property
    def envelope_json(self) -> str:
        """The envelope as JSON, made once however many subscribers send it."""
        return json.dumps(self.envelope())

    @cached_property
    def size(self) -> int:
        """What the event weighs in the history's byte bound: its JSON envelope's length."""
        return len(self.envelope_json)


@dataclass
class Subscription:
    receive: trio.MemoryReceiveChannel[BusEvent]
    send: trio.MemorySendChannel[BusEvent]
    dropped: bool = False


class EventBus:
    def __init__(
        self,
        history: int = HISTORY,
        buffer: int = SUBSCRIBER_BUFFER,
        history_bytes: int = HISTORY_BYTES,
    ) -> None:
        self._ids = itertools.count(1)
        self._last_id = 0
        self._history: deque[BusEvent] = deque()
        self._history_limit = history
        self._history_bytes = history_bytes
        self._bytes = 0
        # Every event with an id above this one that is not a snapshot is in `_history`.
        self._floor = 0
        self._snapshots: OrderedDict[tuple[str, str | None], BusEvent] = OrderedDict()
        self._buffer = buffer
        self._subscribers: list[Subscription] = []
        self._observers: list[Callable[[BusEvent], None]] = []
        self.dropped = 0

    @property
    def last_id(self) -> int:
        return self._last_id

    def publish(self, type_: str, data: dict[str, Any], search_id: str | None = None) -> BusEvent:
        """Record and fan out an event; never blocks."""
        event = BusEvent(next(self._ids), type_, rfc3339_now(), search_id, data)
        self._last_id = event.id
        self._keep(event)
        for observer in self._observers:
            observer(event)
        for subscription in list(self._subscribers):
            self._deliver(subscription, event)
        return event

    def observe(self, observer: Callable[[BusEvent], None]) -> None:
        """Call `observer` with every event as it is published, before the subscribers get
        it (the store's timeline keeps the formations' events). It runs on the publisher's
        path, so it must not block: it may only queue the event."""
        self._observers.append(observer)

    def _keep(self, event: BusEvent) -> None:
        """Into the history, within its bounds (a snapshot replaces the one it supersedes)."""
        if event.type in SNAPSHOTS:
            key = (event.type, event.search_id)
            self._snapshots.pop(key, None)
            self._snapshots[key] = event
            while len(self._snapshots) > MAX_SNAPSHOTS:
                self._snapshots.popitem(last=False)
            return
        self._history.append(event)
        self._bytes += event.size
        while self._history and (
            len(self._history) > self._history_limit or self._bytes > self._history_bytes
        ):
            oldest = self._history.popleft()
            self._bytes -= oldest.size
            self._floor = oldest.id

    def forget_search(self, search_id: str) -> None:
        """Drop a deleted search's snapshots (its progress and stats)."""
        for key in [key for key in self._snapshots if key[1] == search_id]:
            del self._snapshots[key]

    def _deliver(self, subscription: Subscription, event: BusEvent) -> None:
        stats = subscription.send.statistics()
        if stats.current_buffer_used >= stats.max_buffer_size - 1:
            notice = BusEvent(
                event.id,
                "overflow",
                event.ts,
                None,
                {
                    "message": "you fell behind and were dropped; reconnect with "
                    "Last-Event-ID to resume"
                },
            )
            subscription.send.send_nowait(notice)  # the slot kept for it
            self._drop(subscription)
            return
        subscription.send.send_nowait(event)

    def _drop(self, subscription: Subscription) -> None:
        subscription.dropped = True
        subscription.send.close()
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
            self.dropped += 1

    def open_subscription(self, after: int | None = None) -> Subscription:
        """Subscribe; with `after` (a Last-Event-ID), first replay what came since. Pair it
        with `close_subscription` (a subscription never closed is dropped once it fills)."""
        send, receive = trio.open_memory_channel[BusEvent](self._buffer)
        subscription = Subscription(receive, send)
        if after is not None:
            # From before the history, or from an id never issued (fsup restarted and its
            # ids with it, or a made-up one): the client must re-fetch.
            if after < self._floor or after > self.last_id:
                send.send_nowait(
                    BusEvent(
                        self._floor,
                        "reset",
                        rfc3339_now(),
                        None,
                        {
                            "message": "events since your Last-Event-ID are no "
                            "longer kept; re-fetch snapshots"
                        },
                    )
                )
            backlog = [e for e in self._kept() if e.id > after]
            for event in backlog[-(self._buffer - 2) :]:
                send.send_nowait(event)
        self._subscribers.append(subscription)
        return subscription

    def close_subscription(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
        subscription.send.close()
        subscription.receive.close()

    @contextmanager
    def subscribe(self, after: int | None = None) -> Iterator[Subscription]:
        subscription = self.open_subscription(after)
        try:
            yield subscription
        finally:
            self.close_subscription(subscription)

    def close(self) -> None:
        """End every subscription (at shutdown, so open streams do not hold it up)."""
        for subscription in list(self._subscribers):
            subscription.send.close()
        self._subscribers.clear()

    def statistics(self) -> dict[str, int]:
        """Subscribers now, subscribers dropped for falling behind (since start), the last id,
        the events kept for resumes and their JSON bytes."""
        return {
            "subscribers": len(self._subscribers),
            "dropped": self.dropped,
            "last_id": self.last_id,
            "history": len(self._history) + len(self._snapshots),
            "history_bytes": self._bytes + sum(e.size for e in self._snapshots.values()),
        }

    def history(self, types: set[str] | None = None, limit: int = 100) -> list[BusEvent]:
        found = [e for e in self._kept() if types is None or e.type in types]
        return found[-limit:]

    def _kept(self) -> list[BusEvent]:
        """The history and the latest snapshots, in id order."""
        if not self._snapshots:
            return list(self._history)
        return sorted([*self._history, *self._snapshots.values()], key=lambda e: e.id)

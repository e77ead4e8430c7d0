"""Hypercorn's HTTP/2 protocol with the frames that crashed its connection made harmless.

Hypercorn 0.18.0's `H2Protocol` lets four kinds of frame, which any unauthenticated client
can send (the first three valid HTTP/2), raise out of the connection (docs/upstream/
hypercorn-h2-closed-stream.md has the reproduction): the connection is dropped with every other
stream on it, and fsup's connection handler logs a traceback.

- DATA for a stream it has already answered and closed (`KeyError`): a client still sending
  its body when the answer comes (a 401 before the upload ends) is legal, and the stream is
  only half-closed for HTTP/2. The body is dropped here, and its bytes are still handed back
  to the flow-control windows, or the connection would stall once a window's worth of
  dropped bodies had arrived.
- PRIORITY frames naming streams that are not open (`TooManyStreamsError`, and a full priority
  tree refuses every later request): the `priority` tree keeps an entry for each such stream
  and never removes it. Priorities are advice (RFC 9113 deprecates them), so only those
  between open streams are kept.
- A plain CONNECT (RFC 9113 section 8.5, no `:path`): `_create_stream` reads a path that was
  never set (`UnboundLocalError`). It gets the authority as its path, which is what the
  HTTP/1.1 side hands the app for `CONNECT host:port`; Hypercorn then treats it as any
  other CONNECT, as a WebSocket handshake, and answers a clear 4xx.
- A `:method` or `:path` with bytes outside visible ASCII (`UnicodeDecodeError` where
  Hypercorn decodes them): HTTP/1.1's parser refuses such a request line with a 400;
  here the stream is reset with PROTOCOL_ERROR, RFC 9113's answer to a malformed request
  (section 8.1.1), and the connection carries on.

RST_STREAM, WINDOW_UPDATE, trailers and END_STREAM for closed streams are already guarded
upstream. `GuardedProtocolWrapper` is Hypercorn's protocol switch (HTTP/1.1 first, HTTP/2 on
the preface or an `h2c` upgrade) choosing the guarded class; `ContainedTCPServer` installs it.
These are Hypercorn internals, pinned and checked like serving.py's (docs/upstream/README.md,
tests/test_dependency_pins.py).
"""

from __future__ import annotations

import re

import h2.errors
import h2.events
from hypercorn.events import Event, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H2CProtocolRequiredError, H2ProtocolAssumedError

# What h11 accepts in a request target: visible ASCII, at least one character.
_VISIBLE = re.compile(rb"[\x21-\x7e]+")


class GuardedH2Protocol(H2Protocol):
    """`H2Protocol` that drops DATA for closed streams and PRIORITY for streams that are not
    open, gives a plain CONNECT a path and resets a request it cannot decode (see the
    module)."""

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        # One event at a time: whether a stream is still open is decided when its event comes
        # up, since handling the events before it yields to the app, which may close it.
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
            elif isinstance(event, h2.events.PriorityUpdated) and not self._open(event):
                pass
            elif isinstance(event, h2.events.RequestReceived) and not _well_formed(
                _with_a_path(event)
            ):
                self.connection.reset_stream(event.stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            else:
                await super()._handle_events([event])
        await self._flush()

    def _open(self, event: h2.events.PriorityUpdated) -> bool:
        """The stream and the one it depends on (if any) are open with a send buffer, so the
        priority tree already holds both and reprioritising adds no entry."""
        parent = event.depends_on
        return event.stream_id in self.stream_buffers and (
            not parent or parent in self.stream_buffers
        )


def _with_a_path(request: h2.events.RequestReceived) -> h2.events.RequestReceived:
    """`request`, given its `:authority` as `:path` if it has none (a plain CONNECT, the only
    request h2 lets through without one): the target HTTP/1.1 carries in its request line."""
    fields = dict(request.headers)
    if b":path" not in fields:
        request.headers = [*request.headers, (b":path", fields.get(b":authority", b""))]
    return request


def _well_formed(request: h2.events.RequestReceived) -> bool:
    """`:method` and `:path` are visible ASCII, as h11 requires of a request line (Hypercorn
    decodes both as ASCII)."""
    fields = dict(request.headers)
    return all(_VISIBLE.fullmatch(fields.get(name, b"")) for name in (b":method", b":path"))


class GuardedProtocolWrapper(ProtocolWrapper):
    """Hypercorn's HTTP/1.1-or-HTTP/2 switch, switching to `GuardedH2Protocol`."""

    @classmethod
    def replacing(cls, wrapper: ProtocolWrapper) -> ProtocolWrapper:
        """The guarded switch for a connection whose `wrapper` has not read anything yet.
        A wrapper already speaking HTTP/2 (TLS with ALPN, which fsup does not serve) is kept:
        its protocol has started and cannot be swapped."""
        if isinstance(wrapper.protocol, H2Protocol):
            return wrapper
        return cls(
            wrapper.app,
            wrapper.config,
            wrapper.context,
            wrapper.task_group,
            wrapper.state,
            wrapper.ssl,
            wrapper.client,
            wrapper.server,
            wrapper.send,
        )

    async def handle(self, event: Event) -> None:
        try:
            await self.protocol.handle(event)
        except H2ProtocolAssumedError as error:  # the HTTP/2 preface: prior knowledge
            protocol = self._guarded_h2()
            self.protocol = protocol
            await protocol.initiate()
            if error.data != b"":
                await protocol.handle(RawData(data=error.data))
        except H2CProtocolRequiredError as error:  # an `Upgrade: h2c` request
            protocol = self._guarded_h2()
            self.protocol = protocol
            await protocol.initiate(error.headers, error.settings)
            if error.data != b"":
                await protocol.handle(RawData(data=error.data))

    def _guarded_h2(self) -> GuardedH2Protocol:
        return GuardedH2Protocol(
            self.app,
            self.config,
            self.context,
            self.task_group,
            self.state,
            self.ssl,
            self.client,
            self.server,
            self.send,
        )

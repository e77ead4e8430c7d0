"""Raw HTTP/2 for the hostile corpus: an h2c (prior knowledge, cleartext) connection on a bare
socket, framed by the `h2` package's state machine, with hand-written frames (`hyperframe`)
for what `h2` refuses to send, and the sequences that crashed Hypercorn 0.18.0's HTTP/2
connection (docs/upstream/hypercorn-h2-closed-stream.md): a body, a reset, trailers or a
window update after the answer, DATA on a stream never opened, a PRIORITY flood, a plain
CONNECT, a request line that is not ASCII.

Each sequence runs on its own connection, asks its question, then a `GET /health` on the same
connection (unless the question ends the connection, as HTTP/2 says it must), and returns what
fsup answered, stream by stream. Like hostile_wire.py, this knows HTTP/2, not fsup.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import DataFrame, PriorityFrame

# As hostile_wire.py's: how long a connection may take at all before the case fails. (Not
# imported: tests/test_e2e_h2_closed_streams.py imports this module as `hostile.hostile_h2`.)
NO_ANSWER_S = 20.0


@dataclass
class Answer:
    """What one stream got: a status (None: none), its body, or the code of a reset."""

    status: int | None = None
    body: bytes = b""
    reset: int | None = None
    ended: bool = False


@dataclass
class H2Result:
    """Every stream's answer on one connection, and the GOAWAY code if fsup sent one."""

    answers: dict[int, Answer] = field(default_factory=dict)
    goaway: int | None = None
    eof: bool = False

    def describe(self) -> str:
        answers = {k: (a.status, a.reset, a.ended, a.body[:120]) for k, a in self.answers.items()}
        return f"answers={answers} goaway={self.goaway} eof={self.eof}"


class H2Client:
    """One h2c connection with a deadline for everything it waits for."""

    def __init__(
        self, addr: tuple[str, int], bound: float = NO_ANSWER_S, *, upgrade: bool = False
    ) -> None:
        """Prior knowledge, or (`upgrade`) an HTTP/1.1 `GET /health` with `Upgrade: h2c`,
        whose answer comes on stream 1."""
        config = h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        self.conn = h2.connection.H2Connection(config)
        self.authority = f"{addr[0]}:{addr[1]}".encode()
        self.deadline = time.monotonic() + bound
        self.sock = socket.create_connection(addr, timeout=bound)
        self.result = H2Result()
        if upgrade:
            self._upgrade()
        else:
            self.conn.initiate_connection()
        self.flush()

    def _upgrade(self) -> None:
        settings = self.conn.initiate_upgrade_connection()
        self.sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: " + self.authority + b"\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: " + settings + b"\r\n\r\n"
        )
        received = b""
        while b"\r\n\r\n" not in received:
            data = self.sock.recv(65536)
            assert data, f"no answer to the upgrade: {received!r}"
            received += data
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        for event in self.conn.receive_data(rest):
            self._take(event)

    def close(self) -> None:
        self.sock.close()

    def flush(self, extra: bytes = b"") -> None:
        """Send what the state machine has queued, then `extra` (hand-written frames); a
        connection fsup has closed shows as `eof` when the answers are read."""
        try:
            self.sock.sendall(self.conn.data_to_send() + extra)
        except (BrokenPipeError, ConnectionResetError):
            self.result.eof = True

    def request(
        self, stream_id: int, method: bytes, path: bytes, *, end: bool = True, length: int = 2
    ) -> None:
        """A request's head; a POST declares a JSON body of `length` bytes (-1: no length)."""
        fields = [(b":method", method), (b":scheme", b"http"), (b":path", path)]
        fields.append((b":authority", self.authority))
        if method == b"POST":
            fields.append((b"content-type", b"application/json"))
            if length >= 0:
                fields.append((b"content-length", str(length).encode()))
        self.conn.send_headers(stream_id, fields, end_stream=end)
        self.flush()

    def answer(self, stream_id: int) -> Answer:
        return self.result.answers.setdefault(stream_id, Answer())

    def wait(self, stream_id: int) -> Answer:
        """Read until `stream_id` is answered in full or reset, or the connection ends."""
        while not self._done(stream_id):
            remaining = self.deadline - time.monotonic()
            assert remaining > 0, f"no answer on stream {stream_id}: {self.result.describe()}"
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                self.result.eof = True
                break
            for event in self.conn.receive_data(data):
                self._take(event)
            self.flush()
        return self.answer(stream_id)

    def _done(self, stream_id: int) -> bool:
        answer = self.answer(stream_id)
        return answer.ended or answer.reset is not None or self.result.goaway is not None

    def _take(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.answer(event.stream_id).status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.answer(event.stream_id).body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.answer(event.stream_id).ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.answer(event.stream_id).reset = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.result.goaway = int(event.error_code)

    def send_body(self, stream_id: int, size: int) -> int:
        """Send `size` bytes on `stream_id` as flow control allows (fsup must hand the window
        back even for a body it drops); return how many went out before the deadline."""
        sent = 0
        while sent < size:
            room = min(self.conn.local_flow_control_window(stream_id), size - sent, 16384)
            if room > 0:
                self.conn.send_data(stream_id, b"x" * room, end_stream=sent + room == size)
                self.flush()
                sent += room
                continue
            if self.deadline - time.monotonic() <= 0:
                break
            self.sock.settimeout(self.deadline - time.monotonic())
            data = self.sock.recv(65536)
            if not data:
                break
            for event in self.conn.receive_data(data):
                self._take(event)
            self.flush()
        return sent


# ---- the sequences: each opens stream 1 (the question), then asks GET /health on stream 3


def _answered_post(client: H2Client, length: int = 2) -> None:
    """An unauthenticated POST whose body has not come yet: fsup answers 401 at once."""
    client.request(1, b"POST", b"/api/v1/session", end=False, length=length)
    client.wait(1)


def body_after_answer(client: H2Client) -> None:
    _answered_post(client)
    client.conn.send_data(1, b"{}", end_stream=True)
    client.flush()


def body_racing_answer(client: H2Client) -> None:
    """What an HTTP client does: the head, then the body in its own write, not waiting."""
    client.request(1, b"POST", b"/api/v1/session", end=False)
    client.conn.send_data(1, b"{}", end_stream=True)
    client.flush()
    client.wait(1)


def big_body_after_answer(client: H2Client) -> None:
    """Four windows' worth after the answer (no length declared, which h2 would enforce):
    fsup must still hand the connection's window back."""
    _answered_post(client, length=-1)
    size = 4 * 65535
    sent = client.send_body(1, size)
    assert sent == size, f"the window was not handed back: {sent} of {size} bytes sent"


def reset_after_answer(client: H2Client) -> None:
    _answered_post(client)
    client.conn.reset_stream(1)
    client.flush()


def trailers_after_answer(client: H2Client) -> None:
    _answered_post(client)
    client.conn.send_headers(1, [(b"x-trailer", b"1")], end_stream=True)
    client.flush()


def window_after_answer(client: H2Client) -> None:
    _answered_post(client)
    client.conn.increment_flow_control_window(4096, stream_id=1)
    client.flush()


def priority_flood(client: H2Client) -> None:
    """1100 PRIORITY frames for streams never opened: more than the priority tree's 1000."""
    client.request(1, b"GET", b"/health")
    frames = b"".join(
        PriorityFrame(101 + 2 * i, depends_on=0, stream_weight=15).serialize() for i in range(1100)
    )
    client.flush(frames)
    client.wait(1)


def plain_connect(client: H2Client) -> None:
    """RFC 9113 section 8.5's CONNECT: no `:path`, no `:scheme`."""
    fields = [(b":method", b"CONNECT"), (b":authority", b"127.0.0.1:9")]
    client.conn.send_headers(1, fields, end_stream=False)
    client.flush()
    client.wait(1)


def non_ascii_path(client: H2Client) -> None:
    client.request(1, b"GET", b"/ui/\xff\xfe")
    client.wait(1)


def data_on_a_stream_never_opened(client: H2Client) -> None:
    """DATA on stream 5 (idle): a connection error in HTTP/2, so fsup's GOAWAY is the answer,
    after stream 1's."""
    client.request(1, b"GET", b"/health")
    client.wait(1)
    client.flush(DataFrame(5, b"x" * 10).serialize())


@dataclass(frozen=True)
class H2Case:
    """A sequence, and what stream 1 must get: a status (reset None) or a reset code."""

    run: Callable[[H2Client], None]
    first: tuple[int | None, int | None]  # (status, reset) of stream 1
    ends_connection: bool = False  # GOAWAY PROTOCOL_ERROR is the right answer


PROTOCOL_ERROR = 1
SEQUENCES = {
    "body-after-answer": H2Case(body_after_answer, (401, None)),
    "body-racing-answer": H2Case(body_racing_answer, (401, None)),
    "big-body-after-answer": H2Case(big_body_after_answer, (401, None)),
    "reset-after-answer": H2Case(reset_after_answer, (401, None)),
    "trailers-after-answer": H2Case(trailers_after_answer, (401, None)),
    "window-update-after-answer": H2Case(window_after_answer, (401, None)),
    "priority-flood": H2Case(priority_flood, (200, None)),
    "plain-connect": H2Case(plain_connect, (400, None)),
    "non-ascii-path": H2Case(non_ascii_path, (None, PROTOCOL_ERROR)),
    "data-on-a-stream-never-opened": H2Case(
        data_on_a_stream_never_opened, (200, None), ends_connection=True
    ),
}


def play(addr: tuple[str, int], case: H2Case) -> H2Result:
    """Run `case` on a new connection, then `GET /health` on stream 3 (or wait for the
    GOAWAY a connection error calls for); return every answer."""
    client = H2Client(addr)
    try:
        case.run(client)
        if case.ends_connection:
            client.wait(3)  # nothing is sent on 3: this reads until the GOAWAY
        else:
            client.request(3, b"GET", b"/health")
            client.wait(3)
        return client.result
    finally:
        client.close()


def check(result: H2Result, case: H2Case) -> None:
    """Stream 1 got what `case` expects, and the connection carried on (stream 3's 200)
    or ended with the GOAWAY HTTP/2 requires."""
    first = result.answers.get(1, Answer())
    status, reset = case.first
    assert (first.status, first.reset) == (status, reset), result.describe()
    if reset is None:
        assert first.ended, result.describe()
    if case.ends_connection:
        assert result.goaway == PROTOCOL_ERROR, result.describe()
        return
    health = result.answers.get(3, Answer())
    assert (health.status, health.ended) == (200, True), result.describe()
    assert result.goaway is None, result.describe()

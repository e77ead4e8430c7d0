"""Hostile HTTP/2 (h2c, prior knowledge): frames for a stream fsup has already answered (a
body, a reset, trailers, a window update), DATA on a stream never opened, a PRIORITY flood, a
plain CONNECT and a request line that is not ASCII, each on its own connection without any
credential (hostile_h2.py has the sequences).

Each one crashed Hypercorn 0.18.0's HTTP/2 connection: the connection dropped with every
stream on it and fsup logged a traceback (docs/upstream/hypercorn-h2-closed-stream.md). Now
the question gets its answer (or the stream reset, or the GOAWAY HTTP/2 calls for), a GET on
the same connection gets its 200, and nothing changes (checked after every case, the log's
tracebacks included). tests/test_e2e_h2_closed_streams.py runs the same sequences many times.
"""

from __future__ import annotations

import pytest
from hostile_h2 import SEQUENCES, check, play
from hostile_kit import Target

pytestmark = pytest.mark.e2e

FLEET = ("alpha",)
REPEAT = 3


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_hostile_http2_sequence_is_answered_and_changes_nothing(target: Target, name: str) -> None:
    case = SEQUENCES[name]
    for _ in range(REPEAT):
        check(play(target.addr, case), case)

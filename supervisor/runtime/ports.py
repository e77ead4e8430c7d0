"""The pool of ports handed to formations, over `--port-range`.

A port is free for us when no formation holds it and nothing else on the machine listens on
it right now (checked by binding). The check is advisory (another program may take the port
between the check and the child's bind) and that race surfaces as a failed health check.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from supervisor.core.errors import FsupError


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like the servers we start (most set SO_REUSEADDR), ignore TIME_WAIT leftovers; a
        # live listener still makes the bind fail.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class PortStats:
    range: str
    allocated: int
    available: int


class PortPool:
    def __init__(self, low: int, high: int) -> None:
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"bad port range {low}-{high}")
        self.low, self.high = low, high
        self._taken: set[int] = set()
        self._cursor = low

    def allocate(self) -> int:
        """Hand out the next port that is neither ours nor in use, round-robin so a port
        released a moment ago (its socket maybe still in TIME_WAIT) is picked last."""
        size = self.high - self.low + 1
        for step in range(size):
            port = self.low + (self._cursor - self.low + step) % size
            if port in self._taken or not port_is_free(port):
                continue
            self._taken.add(port)
            self._cursor = port + 1 if port < self.high else self.low
            return port
        raise FsupError(
            "PORTS_EXHAUSTED",
            f"no free port left in {self.low}-{self.high}; stop or delete a formation, "
            "or start fsup with a wider --port-range",
            {"range": f"{self.low}-{self.high}"},
        )

    def reserve(self, port: int) -> None:
        """Mark a port as ours again (a formation restored from the store)."""
        self._taken.add(port)

    def release(self, port: int) -> None:
        self._taken.discard(port)

    def statistics(self) -> PortStats:
        size = self.high - self.low + 1
        allocated = sum(1 for p in self._taken if self.low <= p <= self.high)
        return PortStats(f"{self.low}-{self.high}", allocated, size - allocated)

"""Health probes: one attempt each, answering None (healthy) or why not.

The loops around them (how often, until when) belong to the formation actor, so that they run
on trio's clock and can be tested on virtual time with fake probes.

A probe that reaches the port proves only that *something* answered there: `OwnedProbe` adds
that the listener is the formation's own process tree (see `listener`).
"""

from __future__ import annotations

from typing import Protocol

import httpx
import trio

from supervisor.core.manifest import HealthSpec

from .http_probe import HttpProbe as HttpProbe  # the probe `http:` asks for
from .http_probe import ProbeFailed, Refused, connect_once
from .listener import Holder, ListenerCheck

# One attempt never takes longer than this, whatever the interval.
ATTEMPT_TIMEOUT_S = 5.0


class Probe(Protocol):
    async def check(self, port: int) -> str | None: ...


def close_probe(probe: Probe) -> None:
    """Let go of what a probe keeps between checks (the HTTP probe's connection)."""
    close = getattr(probe, "close", None)
    if close is not None:
        close()


class TcpProbe:
    """A TCP connection to 127.0.0.1:<port> must be accepted."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    async def check(self, port: int) -> str | None:
        with trio.move_on_after(self._timeout):
            try:
                await connect_once(port)
            except Refused as exc:
                return f"TCP connect: {exc}"  # it names the port
            except ProbeFailed as exc:
                return f"TCP connect to port {port}: {exc}"
            return None
        return f"TCP connect to port {port} timed out"


class AliveProbe:
    """No probe declared: a process that is still there is healthy."""

    async def check(self, port: int) -> str | None:
        return None


class PortTaken(Exception):
    """A process outside the formation listens on its port: a probe's success was its answer,
    and waiting longer will not change that."""

    def __init__(self, port: int, holders: tuple[Holder, ...]) -> None:
        super().__init__(f"port {port} is held by another process")
        self.port = port
        self.holders = holders


class OwnedProbe:
    """A probe whose success counts only while the formation's own process tree listens on
    the port; raises `PortTaken` when a stranger does.

    The ownership check runs on a success that follows no success (the first one, or one
    after a failure), not on every probe: a port that our process keeps listening on cannot
    be taken by another process, so a steadily healthy formation pays nothing for it. (What
    stays open: our process closes its socket and a stranger binds the port within one
    interval, with no failed probe in between.)"""

    def __init__(self, inner: Probe, listeners: ListenerCheck, pid: int) -> None:
        self._inner = inner
        self._listeners = listeners
        self._pid = pid
        self._confirmed = False

    async def check(self, port: int) -> str | None:
        error = await self._inner.check(port)
        if error is not None:
            self._confirmed = False
            return error
        if not self._confirmed:
            owners = await self._listeners.owners(port, (self._pid,))
            if owners.foreign:
                raise PortTaken(port, owners.foreign)
            if not owners.ours:
                return f"port {port} answered, but neither pid {self._pid} nor its children listen on it"
            self._confirmed = True
        return None

    def close(self) -> None:
        close_probe(self._inner)


def owned(probe: Probe, health: HealthSpec, listeners: ListenerCheck, pid: int) -> Probe:
    """`probe` with the ownership check, unless the formation declares no probe (then it need
    not listen at all: being alive is being healthy)."""
    if health.kind == "process":
        return probe
    return OwnedProbe(probe, listeners, pid)


class ProbeFactory:
    """Builds the probe a `health:` section asks for (one per watched process: an HTTP probe
    keeps its connection between checks)."""

    def __call__(self, health: HealthSpec) -> Probe:
        timeout = min(ATTEMPT_TIMEOUT_S, max(health.interval, 1.0))
        if health.http:
            return HttpProbe(health.http, timeout)
        if health.tcp:
            return TcpProbe(timeout)
        return AliveProbe()


def open_probe_client() -> httpx.AsyncClient:
    """An HTTP client for requests to formations (searches): no proxies from the environment
    (the target is loopback) and no kept-alive connections (each must reach a live
    listener). Health checks have their own, lighter client (`http_probe`). Plain HTTP to
    127.0.0.1 only, so no TLS settings: httpx's default loads the CA bundle into an SSL
    context, 30-380 ms of fsup's start-up for a context that is never used."""
    return httpx.AsyncClient(
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=0),
        follow_redirects=False,
        verify=False,
    )

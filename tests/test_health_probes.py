"""Health probes against real sockets on loopback."""

from __future__ import annotations

import socket

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

from actors.health import AliveProbe, HttpProbe, ProbeFactory, TcpProbe, open_probe_client
from supervisor.manifest import HealthSpec


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_tcp_probe_sees_a_listener_and_its_absence() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    assert await TcpProbe(1.0).check(port) is None
    for listener in listeners:
        await listener.aclose()
    error = await TcpProbe(1.0).check(port)
    assert error is not None and f"port {port}" in error


async def test_http_probe_wants_a_2xx() -> None:
    app = QuartTrio("probe-target")
    state = {"status": 200}

    @app.get("/health")
    async def health() -> tuple[str, int]:
        return "ok", state["status"]

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with open_probe_client() as client, trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(app, config, shutdown_trigger=stop.wait, task_status=task_status))
        port = int(binds[0].rsplit(":", 1)[1])
        probe = HttpProbe(client, "/health", 2.0)
        assert await probe.check(port) is None
        state["status"] = 503
        assert await probe.check(port) == "GET /health answered 503"
        assert "answered 404" in (await HttpProbe(client, "/missing", 2.0).check(port) or "")
        stop.set()
        refused = await HttpProbe(client, "/health", 1.0).check(free_port())
    assert refused is not None and "ConnectError" in refused


async def test_factory_picks_the_probe_the_manifest_asks_for() -> None:
    async with open_probe_client() as client:
        make = ProbeFactory(client)
        assert isinstance(make(HealthSpec(http="/h")), HttpProbe)
        assert isinstance(make(HealthSpec(tcp=True)), TcpProbe)
        assert isinstance(make(HealthSpec()), AliveProbe)

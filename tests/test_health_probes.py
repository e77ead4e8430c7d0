"""Health probes against real sockets on loopback, and whose listener answers them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager

import psutil
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

from actors import listener as listener_module
from actors.health import (
    AliveProbe,
    HttpProbe,
    OwnedProbe,
    PortTaken,
    ProbeFactory,
    TcpProbe,
    owned,
)
from actors.listener import Holder, PortOwners, ProcListeners, port_in_use, port_owners
from supervisor.core.manifest import HealthSpec


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
    assert error is not None and f"$PORT ({port})" in error


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
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(
                app, config, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        port = int(binds[0].rsplit(":", 1)[1])
        probe = HttpProbe("/health", 2.0)
        assert await probe.check(port) is None
        state["status"] = 503
        assert await probe.check(port) == "GET /health answered 503"
        missing = HttpProbe("/missing", 2.0)
        assert "answered 404" in (await missing.check(port) or "")
        probe.close()
        missing.close()
        stop.set()
        closed = free_port()
        refused = await HttpProbe("/health", 1.0).check(closed)
        tcp_refused = await TcpProbe(1.0).check(closed)
    # A refused probe says what to do, naming the port it tried.
    said = f"nothing listens on 127.0.0.1:{closed} (connection refused): "
    said += f"the program must listen on $PORT ({closed})"
    assert refused == f"GET /health: {said}"
    assert tcp_refused == f"TCP connect: {said}"


async def test_factory_picks_the_probe_the_manifest_asks_for() -> None:
    make = ProbeFactory()
    assert isinstance(make(HealthSpec(http="/h")), HttpProbe)
    assert isinstance(make(HealthSpec(tcp=True)), TcpProbe)
    assert isinstance(make(HealthSpec()), AliveProbe)


# -- whose listener answers: the formation's own tree, or a stranger ------------------------


@contextmanager
def listening(
    host: str = "127.0.0.1", family: socket.AddressFamily = socket.AF_INET
) -> Iterator[int]:
    """A listening socket in this test process (a stranger to any formation); its port."""
    with socket.socket(family) as server:
        server.bind((host, 0))
        server.listen()
        yield int(server.getsockname()[1])


LISTENER = (
    "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
    "print(s.getsockname()[1], flush=True); time.sleep(60)"
)


@contextmanager
def listening_child(wrapped: bool) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A child process that listens; `wrapped`: behind a shell, so a grandchild listens."""
    command = f'{sys.executable} -c "{LISTENER}"' + ("; true" if wrapped else "")
    child = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        yield child, int(child.stdout.readline())
    finally:
        for proc in psutil.Process(child.pid).children(recursive=True):
            proc.kill()
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_a_listener_of_the_tree_is_ours_and_anyone_else_is_a_stranger() -> None:
    with listening() as port:
        assert port_owners(port, [os.getpid()]) == PortOwners(ours=True)
        stranger = port_owners(port, [])
        assert stranger.ours is False
        assert [h.pid for h in stranger.foreign] == [os.getpid()]
        assert stranger.foreign[0].name == psutil.Process().name()
    assert port_owners(port, [os.getpid()]) == PortOwners(ours=False)  # nobody listens


def test_descendants_count_as_the_tree() -> None:
    for wrapped in (False, True):
        with listening_child(wrapped) as (child, port):
            assert port_owners(port, [child.pid]) == PortOwners(ours=True)
            tree = {child.pid} | {p.pid for p in psutil.Process(child.pid).children()}
            foreign = port_owners(port, []).foreign
            assert len(foreign) == 1 and foreign[0].pid in tree


def test_only_listeners_that_reach_127_0_0_1_count() -> None:
    with listening("0.0.0.0") as port:
        assert port_owners(port, []).foreign
    if socket.has_ipv6:
        with listening("::", socket.AF_INET6) as port:
            assert port_owners(port, []).foreign  # a dual-stack wildcard takes 127.0.0.1 too
        with listening("::1", socket.AF_INET6) as port:
            assert port_owners(port, []) == PortOwners(ours=False)


def test_the_proc_tables_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    with listening() as port:
        from_diag = listener_module.listening_inodes(port)

        def no_netlink(family: int) -> list[tuple[bytes, int, int]]:
            raise OSError("no sock_diag")

        monkeypatch.setattr(listener_module, "diag_listeners", no_netlink)
        assert listener_module.listening_inodes(port) == from_diag != set()


async def test_proc_listeners_answer_from_a_worker_thread() -> None:
    with listening() as port:
        assert await ProcListeners().owners(port, [os.getpid()]) == PortOwners(ours=True)


def test_port_in_use_names_the_port_the_holder_and_what_to_do() -> None:
    error = port_in_use("web", 8123, (Holder(77, "nginx"),), "spawning")
    assert (error.code, error.status) == ("PORT_IN_USE", 409)
    assert "port 8123" in error.message and "pid 77 (nginx)" in error.message
    assert "then start 'web' again" in error.message
    assert error.details == {
        "formation_id": "web",
        "port": 8123,
        "stage": "spawning",
        "pid": 77,
        "process_name": "nginx",
        "holders": [{"pid": 77, "name": "nginx"}],
    }
    unseen = port_in_use("web", 8123, (Holder(None, None),), "health_check", "1.0.0")
    assert "cannot see" in unseen.message and "1.0.0 keeps serving" in unseen.message


class ScriptedListeners:
    def __init__(self, owners: PortOwners) -> None:
        self.answer = owners
        self.calls = 0

    async def owners(self, port: int, roots: Collection[int]) -> PortOwners:
        self.calls += 1
        return self.answer


class ScriptedProbe:
    def __init__(self) -> None:
        self.error: str | None = None

    async def check(self, port: int) -> str | None:
        return self.error


async def test_owned_probe_checks_ownership_only_when_health_turns_good() -> None:
    inner, listeners = ScriptedProbe(), ScriptedListeners(PortOwners(ours=True))
    probe = OwnedProbe(inner, listeners, pid=123)
    for _ in range(5):
        assert await probe.check(8000) is None
    assert listeners.calls == 1
    inner.error = "503"
    assert await probe.check(8000) == "503"
    inner.error = None
    listeners.answer = PortOwners(ours=False, foreign=(Holder(9, "squatter"),))
    with pytest.raises(PortTaken) as taken:
        await probe.check(8000)
    assert taken.value.port == 8000 and taken.value.holders == (Holder(9, "squatter"),)
    listeners.answer = PortOwners(ours=False)  # it answered, but nobody of ours listens
    assert "neither pid 123 nor its children" in (await probe.check(8000) or "")
    assert listeners.calls == 3


def test_a_formation_without_a_probe_need_not_listen() -> None:
    inner, listeners = ScriptedProbe(), ScriptedListeners(PortOwners(ours=False))
    assert owned(inner, HealthSpec(), listeners, 1) is inner
    assert isinstance(owned(inner, HealthSpec(tcp=True), listeners, 1), OwnedProbe)

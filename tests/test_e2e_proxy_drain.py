"""End-to-end: fsup's idle keep-alives never hold up a stopping process (issue 17, item 7).

The formation is the stdlib's `ThreadingHTTPServer` as many services run it: non-daemon handler
threads, `block_on_close`, and a graceful stop on SIGTERM that waits for every open
connection. Under proxied keep-alive load, an operator restart must not wait for the pooled
connections fsup keeps to it (before, it took the whole stop timeout and the held requests were
released with 503 at the hold bound).
"""

from __future__ import annotations

import time

import psutil
import pytest
from helpers import Server, wait_for
from test_e2e_proxy_backends import misbehaving_bundle
from test_e2e_proxy_hold import Load

pytestmark = pytest.mark.e2e

# Long, so that a stop that waited for it cannot pass for a quick one on a busy machine; the
# bound asserted is half of it.
STOP_TIMEOUT_S = 40
GZIP = "application/gzip"


def served_after(load: Load, count: int) -> None:
    """Until `count` more GETs of `load` have been answered, whatever their status."""
    done = sum(load.outcomes.values())
    wait_for(lambda: sum(load.outcomes.values()) >= done + count, timeout=30, interval=0.01)


def test_a_restart_under_keep_alive_load_does_not_wait_for_fsups_idle_connections(
    server: Server,
) -> None:
    server.rpc.deploy(misbehaving_bundle("blocky", "block", stop={"timeout": STOP_TIMEOUT_S}))
    with Load(f"{server.url}/api/blocky/x") as load:
        served_after(load, 25)  # fsup's pooled keep-alive connections are open
        started = time.monotonic()
        server.rpc.call("POST", "/rpc/formations/blocky/restart")
        took = time.monotonic() - started
        served_after(load, 25)  # and the new process serves
    print(f"\nrestart under load took {took:.2f}s; outcomes {dict(load.outcomes)}")
    assert took < STOP_TIMEOUT_S / 2, took
    assert set(load.outcomes) == {"200"}, (load.outcomes, load.failures[:3])


def test_an_update_under_keep_alive_load_retires_the_old_process_at_once(
    server: Server,
) -> None:
    bundle = misbehaving_bundle("blocky", "block", stop={"timeout": STOP_TIMEOUT_S})
    old_pid = server.rpc.deploy(bundle)["pid"]
    newer = misbehaving_bundle("blocky", "block", stop={"timeout": STOP_TIMEOUT_S}, version="1.1.0")
    with Load(f"{server.url}/api/blocky/x") as load:
        served_after(load, 25)
        started = time.monotonic()
        server.rpc.call("PUT", "/rpc/formations/blocky", newer, {"Content-Type": GZIP})
        wait_for(lambda: not _alive(old_pid), timeout=STOP_TIMEOUT_S * 2)
        took = time.monotonic() - started
        served_after(load, 25)
    print(f"\nupdate under load retired the old process after {took:.2f}s; {dict(load.outcomes)}")
    assert took < STOP_TIMEOUT_S / 2, took
    assert set(load.outcomes) == {"200"}, (load.outcomes, load.failures[:3])
    assert server.formation("blocky")["version"] == "1.1.0"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

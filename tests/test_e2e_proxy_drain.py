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

STOP_TIMEOUT_S = 10
GZIP = "application/gzip"


def test_a_restart_under_keep_alive_load_does_not_wait_for_fsups_idle_connections(
    server: Server,
) -> None:
    server.rpc.deploy(misbehaving_bundle("blocky", "block", stop={"timeout": STOP_TIMEOUT_S}))
    with Load(f"{server.url}/api/blocky/x") as load:
        time.sleep(0.5)
        started = time.monotonic()
        server.rpc.call("POST", "/rpc/formations/blocky/restart")
        took = time.monotonic() - started
        time.sleep(0.3)
    print(f"\nrestart under load took {took:.2f}s; outcomes {dict(load.outcomes)}")
    assert took < STOP_TIMEOUT_S / 2, took
    assert set(load.outcomes) == {"200"}, (load.outcomes, load.failures[:3])
    assert load.outcomes["200"] > 50


def test_an_update_under_keep_alive_load_retires_the_old_process_at_once(
    server: Server,
) -> None:
    bundle = misbehaving_bundle("blocky", "block", stop={"timeout": STOP_TIMEOUT_S})
    old_pid = server.rpc.deploy(bundle)["pid"]
    newer = misbehaving_bundle("blocky", "block", stop={"timeout": STOP_TIMEOUT_S}, version="1.1.0")
    with Load(f"{server.url}/api/blocky/x") as load:
        time.sleep(0.5)
        started = time.monotonic()
        server.rpc.call("PUT", "/rpc/formations/blocky", newer, {"Content-Type": GZIP})
        wait_for(lambda: not _alive(old_pid), timeout=STOP_TIMEOUT_S * 2)
        took = time.monotonic() - started
        time.sleep(0.3)
    print(f"\nupdate under load retired the old process after {took:.2f}s; {dict(load.outcomes)}")
    assert took < STOP_TIMEOUT_S / 2, took
    assert set(load.outcomes) == {"200"}, (load.outcomes, load.failures[:3])
    assert server.formation("blocky")["version"] == "1.1.0"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

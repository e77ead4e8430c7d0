"""Which door a path comes through (`core.doors`), as a table: the one decision the Host
check, the head's guard, the audit, the WebSocket refusal and the OpenAPI document share.
No I/O."""

from __future__ import annotations

import pytest

from supervisor.core.doors import NAMED_ROUTES, Door, door_of

TABLE = [
    ("/health", Door.PUBLIC),
    ("/ping", Door.PUBLIC),
    ("/health/x", Door.OTHER),
    ("/rpc", Door.RPC),
    ("/rpc/formations/a/stop", Door.RPC),
    ("/rpcx", Door.OTHER),
    ("/api/v1", Door.API),
    ("/api/v1/", Door.API),
    ("/api/v1/formations/a/stop", Door.API),
    ("/api/v1x", Door.PROXIED),  # a formation may be called v1x
    ("/api/v2/x", Door.PROXIED),
    ("/api/alpha", Door.PROXIED),
    ("/api/alpha/", Door.PROXIED),
    ("/api/", Door.PROXIED),
    ("/api", Door.OTHER),
    ("/ui", Door.UI),
    ("/ui/", Door.UI),
    ("/ui/app.js", Door.UI),
    ("/uix", Door.OTHER),
    ("/openapi.json", Door.UI),
    ("/metrics", Door.UI),
    ("/", Door.OTHER),
    ("*", Door.OTHER),
    ("//api/v1/auth/bootstrap", Door.OTHER),  # no route: 404, never routed to /api/v1
]


@pytest.mark.parametrize(("path", "door"), TABLE)
def test_each_path_comes_through_one_door(path: str, door: Door) -> None:
    assert door_of(path) is door


def test_only_the_browser_reachable_doors_check_the_host() -> None:
    checked = {door for door in Door if door.names_checked}
    assert checked == {Door.API, Door.UI}
    assert all(door_of(route).names_checked for route in NAMED_ROUTES)

"""Which door a request path comes through: the one place that decides it.

fsup answers on one port for several callers, and what a request must show depends on the
door it takes, not on its route (a path that matches no route is refused by the same rules
as its neighbours):

- `PUBLIC`: `/health` and `/ping`, for anyone; no credential header is looked at.
- `RPC`: `/rpc` and under it, signed (HMAC); every call audited. No Host check: a page cannot
  sign.
- `API`: `/api/v1` and under it, the bearer token or the dashboard's session cookie; a Host
  that names this server (DNS rebinding); every call that changes something audited.
- `UI`: `/ui`, `/openapi.json` and `/metrics`, the other routes a browser reaches: the Host
  check too.
- `PROXIED`: `/api/{id}` and under it for any id but `v1`: the formation's own request, passed
  on as it came (its Host, its query, its headers are the formation's business).
- `OTHER`: anything else (no fsup route: a 404 in the contract's shape).

Paths are the decoded, routed ones (`request.path`). Pure: no request object, no I/O.
"""

from __future__ import annotations

from enum import Enum

API_PREFIX = "/api/v1"
RPC_PREFIX = "/rpc"
PROXY_PREFIX = "/api/"
PUBLIC_PATHS = frozenset({"/health", "/ping"})
# The browser-reachable routes other than the API (each the path itself or under it).
UI_PREFIXES = ("/ui", "/openapi.json", "/metrics")
# Every Host-checked route, as a refusal names them.
NAMED_ROUTES = (API_PREFIX, *UI_PREFIXES)


class Door(Enum):
    PUBLIC = "public"
    RPC = "rpc"
    API = "api_v1"
    UI = "ui"
    PROXIED = "proxied"
    OTHER = "other"

    @property
    def names_checked(self) -> bool:
        """Whether a request through this door must carry a Host that names this server."""
        return self in (Door.API, Door.UI)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def door_of(path: str) -> Door:
    """The door `path` (decoded, as routed) comes through."""
    if path in PUBLIC_PATHS:
        return Door.PUBLIC
    if _under(path, RPC_PREFIX):
        return Door.RPC
    if _under(path, API_PREFIX):
        return Door.API
    if path.startswith(PROXY_PREFIX):
        return Door.PROXIED
    if any(_under(path, prefix) for prefix in UI_PREFIXES):
        return Door.UI
    return Door.OTHER

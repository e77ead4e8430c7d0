"""`/rpc/server/faults`: arm test-only actor faults (see `actors.faults`).

Registered only when fsup was started with `FSUP_TEST_FAULTS=1`; otherwise the route does not
exist and the path answers 404 like any unknown one, so a production server offers no way to
break its own actors. It lives under `/rpc/` so that, even in a test, only a holder of the HMAC
key can use it.

`POST` body: `{"actor": "fleet" | "searches" | "formation:<id>" | "search-run:<id>",
"count": 1}` (count 0 disarms; defaults to 1). `GET` answers what is armed and what fired.
"""

from __future__ import annotations

import json
import re
from typing import Any

from quart import Blueprint, request

from actors import faults
from supervisor.core.errors import FsupError
from supervisor.http import rpc_auth

PATH = "/rpc/server/faults"
MAX_BODY = 1024
# The actor names fsup gives (actors/fleet.py, actors/search.py, actors/search_run.py): anything
# else is a typo that would arm a fault nobody ever trips, and a test that silently injects
# nothing proves nothing.
ACTOR_NAME = re.compile(
    r"fleet|searches|formation:[a-z0-9][a-z0-9-]{1,48}[a-z0-9]|search-run:[a-z0-9][a-z0-9-]{0,63}"
)


def _bad(message: str, field: str | None = None) -> FsupError:
    return FsupError("INVALID_REQUEST", message, {"field": field} if field else {})


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse duplicate keys: `{"count": 1, "count": 500}` must not mean whichever came last."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _bad(f"duplicate field {key!r}", key)
        seen[key] = value
    return seen


def parse_body(raw: bytes) -> tuple[str, int]:
    """The actor name and count of a fault request; `INVALID_REQUEST` for anything else."""
    if len(raw) > MAX_BODY:
        raise _bad(f"the request body is larger than {MAX_BODY} bytes")
    try:
        body = json.loads(raw, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    unknown = sorted(set(body) - {"actor", "count"})
    if unknown:
        raise _bad(f"unknown field {unknown[0]!r} (allowed: actor, count)", unknown[0])
    actor = body.get("actor")
    if not isinstance(actor, str) or not ACTOR_NAME.fullmatch(actor):
        raise _bad(
            "'actor' must be 'fleet', 'searches', 'formation:<id>' or 'search-run:<id>'", "actor"
        )
    count = body.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= faults.MAX_COUNT:
        raise _bad(f"'count' must be an integer from 0 to {faults.MAX_COUNT}", "count")
    return actor, count


async def arm_fault() -> Any:
    actor, count = parse_body(
        await request.get_data(cache=True, as_text=False, parse_form_data=False)
    )
    faults.arm(actor, count)
    return {"actor": actor, "armed": count}


async def fault_status() -> Any:
    return faults.status()


def blueprint() -> Blueprint | None:
    """The fault route, signed and audited like the rest of `/rpc`; only in a server started
    with `FSUP_TEST_FAULTS=1`."""
    if not faults.ENABLED:
        return None
    bp = Blueprint("faults", __name__)
    bp.before_request(rpc_auth.authenticate)
    bp.post(PATH)(arm_fault)
    bp.get(PATH)(fault_status)
    return bp

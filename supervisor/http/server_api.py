"""`/api/v1/status`, `/api/v1/version`, `/api/v1/settings`, and the periodic `status` event.

The status is the server at a glance, for the dashboard's header: formations by state, the
routing table, what the proxy carried, the event bus's subscribers and drops, and each
process's CPU and memory. The same object is published as a `status` event every
`STATUS_PERIOD_S` while someone listens, so an open page stays current without polling.

Settings are what can change without a restart; today the log level of fsup's own loggers
(`fsup.*`; the libraries keep theirs, so that none logs a header at debug: `runtime.logs`).
A change applies at once and lasts until fsup stops (config.yaml is the operator's file,
not rewritten by the API). An unknown key or a bad value (null included) is a 400 that
names it, and nothing is changed.
"""

from __future__ import annotations

import logging
import platform
import time
from typing import Any

import trio
from quart import Blueprint
from quart_trio import QuartTrio

from supervisor import __version__
from supervisor.core.errors import FsupError
from supervisor.core.safe_json import bad_request
from supervisor.http.api_v1 import PREFIX, api_auth_hook
from supervisor.http.process_watch import ProcessWatch
from supervisor.http.rpc import snapshots
from supervisor.http.searches import json_body
from supervisor.http.services import EXTENSION, keeper_state, services
from supervisor.runtime.logs import LEVELS, level_name, set_level

log = logging.getLogger("fsup.http")

STATUS_PERIOD_S = 5.0
STATES = ("starting", "running", "stopping", "stopped", "restarting", "crashed", "unknown")
SETTINGS = {"log_level": tuple(LEVELS)}
_started = time.monotonic()


def settings() -> dict[str, Any]:
    return {"log_level": level_name()}


async def status_snapshot() -> dict[str, Any]:
    """The server at a glance (inside an app context)."""
    svc = services()
    items = await snapshots()
    by_state = dict.fromkeys(STATES, 0)
    for item in items:
        state = item.get("status")
        by_state[state if state in by_state else "unknown"] += 1
    processes = await trio.to_thread.run_sync(_process_figures, items, svc.process_watch)
    traffic = svc.routes.traffic()
    requests = sum(c["served"] for c in traffic.values())
    in_flight = sum(c["in_flight"] for c in traffic.values())
    return {
        "server_id": svc.server_id,
        "version": __version__,
        "uptime_s": round(time.monotonic() - _started, 3),
        "formations": {"total": len(items), "by_state": by_state},
        "routes": svc.routes.summary(trio.current_time()),
        "proxy": {
            "requests": requests,
            "responses": requests - in_flight,
            "in_flight": in_flight,
            "holding": svc.routes.hold_summary(),
        },
        "events": svc.bus.statistics(),
        "processes": processes,
        **keeper_state(),
    }


def _process_figures(items: list[dict[str, Any]], watch: ProcessWatch) -> dict[str, Any]:
    """The figures of each formation's process, by formation id (stopped ones have none).
    Blocking (psutil reads /proc): run in a thread."""
    found = {}
    for item in items:
        pid = item.get("pid")
        if isinstance(pid, int) and item.get("status") != "stopped":
            found[item["id"]] = watch.figures(pid)
    return found


async def publish_status(app: QuartTrio, period: float = STATUS_PERIOD_S) -> None:
    """A `status` event every `period` while the bus has a subscriber; runs until cancelled
    (the server's nursery owns it). A failure is logged and the next period tries again: the
    server must not stop because a status could not be put together."""
    bus = app.extensions[EXTENSION].bus
    while True:
        await trio.sleep(period)
        if not bus.statistics()["subscribers"]:
            continue
        try:
            async with app.app_context():
                bus.publish("status", await status_snapshot())
        except FsupError as exc:
            log.warning("status event skipped: %s %s", exc.code, exc.message)
        except Exception:
            log.exception("status event failed; trying again in %ss", period)


async def api_status() -> Any:
    return await status_snapshot()


async def api_version() -> Any:
    return {
        "version": __version__,
        "api": "v1",
        "server_id": services().server_id,
        "python": platform.python_version(),
    }


async def api_settings() -> Any:
    return settings()


async def api_patch_settings() -> Any:
    """Checked whole before anything changes: a bad value is a 400 and nothing is set."""
    body = await json_body(set(SETTINGS))
    if "log_level" in body:
        level = body["log_level"]
        if not isinstance(level, str) or level not in LEVELS:
            raise bad_request(
                f"'log_level' must be one of {', '.join(LEVELS)} (null is not a level)",
                "log_level",
            )
        set_level(level)
        log.warning("fsup's log level set to %s through the API", level)
    return settings()


def blueprint() -> Blueprint:
    bp = Blueprint("server_api", __name__)
    bp.before_request(api_auth_hook)
    bp.get(f"{PREFIX}/status")(api_status)
    bp.get(f"{PREFIX}/version")(api_version)
    bp.get(f"{PREFIX}/settings")(api_settings)
    bp.patch(f"{PREFIX}/settings")(api_patch_settings)
    return bp

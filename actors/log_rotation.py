"""One task keeps every formation's logs within their bounds (the fleet runs it).

Children append straight to their log files, so rotation is a periodic check from outside:
two `stat` calls per formation every second, and a copy in a worker thread only when a file
is over its size (`supervisor.storage.formation_logs`). One task for the fleet rather than one per
formation: a formation actor then holds no timer of its own that is not part of its state
machine, and a thousand formations cost one wake-up a second, not a thousand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import trio

from supervisor.storage.formation_logs import LogLimits, needs_rotation, rotate_if_needed

log = logging.getLogger("fsup.logs")

LOG_CHECK_INTERVAL_S = 1.0


async def serve_log_rotation(
    log_dirs: Callable[[], Iterable[tuple[str, Path]]],
    limits: LogLimits,
    interval: float = LOG_CHECK_INTERVAL_S,
) -> None:
    """Every `interval`, rotate the logs of each `(formation_id, log_dir)` that `log_dirs`
    names then (read afresh each round, so formations come and go). Runs until cancelled; a
    failed rotation is logged and retried on the next round."""
    while True:
        for formation_id, log_dir in list(log_dirs()):
            if not needs_rotation(log_dir, limits):
                continue
            try:
                rotated = await trio.to_thread.run_sync(rotate_if_needed, log_dir, limits)
            except OSError as exc:
                log.warning("%s: log rotation failed: %s", formation_id, exc)
                continue
            log.info("%s: rotated %s", formation_id, ", ".join(rotated))
        await trio.sleep(interval)

"""One task keeps every formation's legacy logs within their bounds (the fleet runs it).

Only the legacy `stdout.log` and `stderr.log` are looked at: children an older fsup started
(adopted after an upgrade) append straight to them. The log keeper rotates its own
`<version>.log` files as it writes them; this task never names them.

Children append straight to their legacy files, so rotation is a periodic check from outside:
`stat` calls, and a copy in a worker thread only when a file is over its size
(`supervisor.storage.formation_logs`). One task for the fleet rather than one per formation:
a formation actor then holds no timer of its own that is not part of its state machine, and a
thousand formations cost one wake-up a second, not a thousand.

A log that is growing, or past half its size, is looked at every second. A quiet one is looked
at ever less often (about 2, 4, then every `QUIET_MAX_S` seconds, on grids that every quiet log
shares: `supervisor.core.ticks`) and every second again as soon as it grows. At idle, 100
formations cost one wake-up and 200 `stat` calls every 5 s instead of 200 a second (fsup's idle
CPU is part of issue 11's budget). The price: a log that wakes up after a quiet spell (or a new
formation's) can run past its size by what it writes in up to `QUIET_MAX_S` seconds before it
is rotated.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import trio

from supervisor.core.ticks import next_on_grid
from supervisor.storage.formation_logs import STREAMS, LogLimits, rotate_if_needed, stream_path

log = logging.getLogger("fsup.logs")

LOG_CHECK_INTERVAL_S = 1.0
# The longest a quiet log goes unchecked.
QUIET_MAX_S = 5.0


@dataclass
class _Watched:
    files: tuple[str, ...]  # the streams' current files, as strings (no pathlib per look)
    sizes: tuple[int, ...] = ()
    quiet: int = 0  # looks in a row that found nothing changed
    due: float = 0.0


def file_sizes(files: tuple[str, ...]) -> tuple[int, ...]:
    """The sizes of the streams' files, -1 for one not there (yet): the one look each round
    costs. Public: the tests count the looks through it (a quiet log is looked at less)."""
    sizes = []
    for name in files:
        try:
            sizes.append(os.stat(name).st_size)
        except OSError:
            sizes.append(-1)  # not there (yet)
    return tuple(sizes)


async def serve_log_rotation(
    log_dirs: Callable[[], Iterable[tuple[str, Path]]],
    limits: LogLimits,
    interval: float = LOG_CHECK_INTERVAL_S,
) -> None:
    """Rotate the logs of each `(formation_id, log_dir)` that `log_dirs` names (read afresh
    each round, so formations come and go), looking at each as often as the module's docstring
    says. Runs until cancelled; a failed rotation is logged and retried on the next round."""
    watched: dict[Path, _Watched] = {}
    while True:
        now = trio.current_time()
        named = list(log_dirs())
        for formation_id, log_dir in named:
            entry = watched.get(log_dir)
            if entry is None:
                files = tuple(str(stream_path(log_dir, stream)) for stream in STREAMS)
                entry = watched[log_dir] = _Watched(files, due=now)
            if now < entry.due:
                continue
            sizes = file_sizes(entry.files)
            if max(sizes) >= limits.max_bytes:
                try:
                    rotated = await trio.to_thread.run_sync(rotate_if_needed, log_dir, limits)
                except OSError as exc:
                    log.warning("%s: log rotation failed: %s", formation_id, exc)
                else:
                    log.info("%s: rotated %s", formation_id, ", ".join(rotated))
                sizes = ()
            if sizes != entry.sizes or max(sizes, default=0) * 2 >= limits.max_bytes:
                entry.quiet = 0
            else:
                entry.quiet += 1
            entry.sizes = sizes
            gap = min(QUIET_MAX_S, interval * 2**entry.quiet)
            # A growing log is looked at again in a second; quiet ones on a grid, together.
            entry.due = now + gap if entry.quiet == 0 else next_on_grid(now, gap)
        if len(watched) > len(named):
            listed = {log_dir for _, log_dir in named}
            for gone in [d for d in watched if d not in listed]:
                del watched[gone]
        # Wake when the first log is due: with an idle fleet, once per QUIET_MAX_S (a formation
        # added meanwhile is first looked at then).
        await trio.sleep_until(min((e.due for e in watched.values()), default=now + interval))

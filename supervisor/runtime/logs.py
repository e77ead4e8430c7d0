"""The server's own log: one logfmt line per record, to stderr and a bounded rotating file.

fsup's log level (config, `PATCH /api/v1/settings`) is the level of fsup's own loggers
(`fsup` and `fsup.*`), never the root logger's: the libraries under fsup keep theirs. At
debug, the HTTP/2 header codec (`hpack`) logs every decoded header, bearer tokens, session
cookies and signatures included; h11, Hypercorn, httpx and others log requests. The root
stays at INFO, and the handlers drop any record under INFO that is not fsup's own, so no
library's debug output reaches the log even if a library sets its own logger to DEBUG.
"""

from __future__ import annotations

import itertools
import logging
import logging.handlers
import threading
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

from supervisor.core.timestamps import rfc3339_at
from supervisor.runtime.events import EventBus

LOG_BOOK_SIZE = 5000
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
# fsup's own loggers are this one and its children (Quart's app logger is named after the app).
FSUP_LOGGER = "fsup"
# The root logger's level, whatever fsup's: what the libraries inherit.
LIBRARY_LEVEL = logging.INFO

MAX_LOG_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = rfc3339_at(record.created)
        message = record.getMessage().replace('"', "'")
        line = f'ts={ts} level={record.levelname.lower()} logger={record.name} msg="{message}"'
        if record.exc_info:
            trace = self.formatException(record.exc_info).replace("\n", "\\n").replace('"', "'")
            line += f' exc="{trace}"'
        return line


def is_own(record: logging.LogRecord) -> bool:
    return record.name == FSUP_LOGGER or record.name.startswith(FSUP_LOGGER + ".")


def libraries_quiet_below_info(record: logging.LogRecord) -> bool:
    """A handler's filter: a library's record under INFO is dropped (see the module's doc)."""
    return record.levelno >= LIBRARY_LEVEL or is_own(record)


def set_level(name: str) -> None:
    """fsup's own log level (one of `LEVELS`); the libraries' are left as they are."""
    logging.getLogger(FSUP_LOGGER).setLevel(LEVELS[name])


def level_name() -> str:
    level = logging.getLogger(FSUP_LOGGER).getEffectiveLevel()
    return next((name for name, number in LEVELS.items() if number == level), "info")


def configure(log_dir: Path, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.setLevel(LIBRARY_LEVEL)
    logging.getLogger(FSUP_LOGGER).setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = LogfmtFormatter()
    to_stderr = logging.StreamHandler()
    to_file = logging.handlers.RotatingFileHandler(
        log_dir / "fsup.log", maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS
    )
    for handler in (to_stderr, to_file):
        handler.setFormatter(formatter)
        handler.addFilter(libraries_quiet_below_info)
        root.addHandler(handler)
    # Hypercorn's per-request access log would drown the supervisor's own records.
    logging.getLogger("hypercorn.access").disabled = True
    # httpx logs every health probe at INFO: twice a second per formation.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


class _Kept(NamedTuple):
    """One record as the book keeps it: a tuple, its time as a float and its level and logger
    names shared, not a dict of fresh strings (5,000 dicts held about 2.4 MB, filled slowly
    by a long churn, which looked like a leak: issue 17). Made into a dict when read."""

    id: int
    created: float
    level: str
    logger: str
    message: str

    def entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": rfc3339_at(self.created),
            "level": self.level,
            "logger": self.logger,
            "message": self.message,
        }


_LEVEL_NAMES = {number: name for name, number in LEVELS.items()}


class LogBook(logging.Handler):
    """The server's recent log records, in memory and bounded, for `GET /api/v1/logs`; each
    is also published as a `log` event when it is logged from the trio thread (the bus is
    not thread-safe, and records from worker threads are kept but not published)."""

    def __init__(self, bus: EventBus | None = None, size: int = LOG_BOOK_SIZE) -> None:
        super().__init__(logging.INFO)
        self._records: deque[_Kept] = deque(maxlen=size)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._bus = bus
        self._trio_thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        level = _LEVEL_NAMES.get(record.levelno) or record.levelname.lower()
        message = record.getMessage()
        with self._lock:
            kept = _Kept(next(self._ids), record.created, level, record.name, message)
            self._records.append(kept)
        if self._bus is not None and threading.get_ident() == self._trio_thread:
            self._bus.publish("log", kept.entry())

    def page(self, level: str, limit: int, cursor: int) -> tuple[list[dict[str, Any]], int]:
        """Records after `cursor` at `level` or above, oldest first; and the next cursor."""
        floor = LEVELS[level]
        with self._lock:
            found = [r for r in self._records if r.id > cursor and LEVELS.get(r.level, 0) >= floor]
        page = found[:limit]
        return [r.entry() for r in page], (page[-1].id if page else cursor)

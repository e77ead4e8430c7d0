"""The server's own log: one logfmt line per record, to stderr and a bounded rotating file."""

from __future__ import annotations

import logging
import logging.handlers
from datetime import UTC, datetime
from pathlib import Path

MAX_LOG_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        message = record.getMessage().replace('"', "'")
        line = f'ts={ts} level={record.levelname.lower()} logger={record.name} msg="{message}"'
        if record.exc_info:
            trace = self.formatException(record.exc_info).replace("\n", "\\n").replace('"', "'")
            line += f' exc="{trace}"'
        return line


def configure(log_dir: Path, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = LogfmtFormatter()
    to_stderr = logging.StreamHandler()
    to_stderr.setFormatter(formatter)
    to_file = logging.handlers.RotatingFileHandler(
        log_dir / "fsup.log", maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS
    )
    to_file.setFormatter(formatter)
    root.addHandler(to_stderr)
    root.addHandler(to_file)
    # Hypercorn's per-request access log would drown the supervisor's own records.
    logging.getLogger("hypercorn.access").disabled = True
    # httpx logs every health probe at INFO: twice a second per formation.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)

"""fsup's log level is its own loggers' (`fsup.*`), never the libraries': at debug, the
HTTP/2 header codec logs every header, credentials included (issue 17, item 8). The
end-to-end check (a real fsup at debug, HTTP/1.1 and h2c) is in tests/test_e2e_web_trust.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from supervisor.runtime.logs import (
    FSUP_LOGGER,
    LIBRARY_LEVEL,
    level_name,
    libraries_quiet_below_info,
    set_level,
)


@pytest.fixture
def keep_levels() -> Iterator[None]:
    names = ("", FSUP_LOGGER, "hpack")
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "Authorization: Bearer x", None, None)


@pytest.mark.parametrize(
    ("name", "level", "kept"),
    [
        ("hpack.hpack", logging.DEBUG, False),  # "Decoded ... authorization ..." at debug
        ("h2.connection", logging.DEBUG, False),
        ("h11", logging.DEBUG, False),
        ("hypercorn.error", logging.DEBUG, False),
        ("httpcore.http11", logging.DEBUG, False),
        ("quart.app", logging.DEBUG, False),
        ("asyncio", logging.DEBUG, False),
        ("fsupx", logging.DEBUG, False),  # not a child of `fsup`
        ("hypercorn.error", logging.INFO, True),
        ("asyncio", logging.ERROR, True),
        ("fsup", logging.DEBUG, True),  # Quart's app logger, named after the app
        ("fsup.http", logging.DEBUG, True),
        ("fsup.formation", logging.DEBUG, True),
    ],
)
def test_only_fsups_own_records_pass_under_info(name: str, level: int, kept: bool) -> None:
    assert libraries_quiet_below_info(record(name, level)) is kept


def test_the_level_setting_moves_fsups_loggers_only(keep_levels: None) -> None:
    root = logging.getLogger()
    root.setLevel(LIBRARY_LEVEL)
    set_level("debug")
    assert level_name() == "debug"
    assert logging.getLogger("fsup.http").isEnabledFor(logging.DEBUG)
    assert root.level == LIBRARY_LEVEL
    assert not logging.getLogger("hpack").isEnabledFor(logging.DEBUG)
    set_level("warning")
    assert level_name() == "warning"
    assert not logging.getLogger("fsup.http").isEnabledFor(logging.INFO)
    assert logging.getLogger("hypercorn.error").isEnabledFor(logging.INFO)

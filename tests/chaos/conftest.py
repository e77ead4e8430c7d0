"""Options and marker of the seeded chaos run (issue 8, item 9).

The run is short by default so that the normal suite (and CI) always exercises it, and long on
demand: `pytest tests/chaos --chaos-minutes 10 --chaos-seed 1234`. Without `--chaos-seed` a
fresh seed is drawn and printed, so every CI run explores a different schedule and any failing
one can be replayed. The options exist when `tests/chaos` is named on the command line (this
conftest is not loaded before a plain `pytest` parses its arguments). Everything here is marked
`chaos` (about 1.75 minutes in all by default): `pytest -m "not chaos"` leaves it out of a quick
local run.
"""

from __future__ import annotations

import time

import pytest
from chaos_world import ChaosSettings

DEFAULT_MINUTES = 1.25  # 75 s of chaos: long enough for every kind of kill, short for CI


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "seeded chaos run against a real fsup")
    group.addoption(
        "--chaos-minutes", type=float, default=DEFAULT_MINUTES,
        help=f"how long the chaos run lasts, in minutes (default {DEFAULT_MINUTES})",
    )
    group.addoption(
        "--chaos-seed", type=int, default=None,
        help="seed of the chaos schedule (default: a fresh one, printed)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: seeded chaos run (kills, actor faults) against a real fsup"
    )


@pytest.fixture
def chaos_settings(request: pytest.FixtureRequest) -> ChaosSettings:
    minutes = request.config.getoption("--chaos-minutes")
    if minutes <= 0:
        raise pytest.UsageError("--chaos-minutes must be positive")
    seed = request.config.getoption("--chaos-seed")
    if seed is None:
        seed = time.time_ns() % 1_000_000_007
    return ChaosSettings(seconds=minutes * 60.0, seed=seed)

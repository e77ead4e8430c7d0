"""Options and marker of the seeded chaos run (issue 8, item 9).

The run is short by default so that the normal suite (and CI) always exercises it, and long on
demand: `pytest tests/chaos --chaos-minutes 10 --chaos-seed 1234`. Without `--chaos-seed` a
fresh seed is drawn and printed, so every CI run explores a different schedule and any failing
one can be replayed. The options are declared in tests/conftest.py, which pytest loads before it
parses the command line, so a plain `pytest --chaos-minutes 10` works too. Everything here is marked
`chaos` (about 1.75 minutes in all by default): `pytest -m "not chaos"` leaves it out of a quick
local run.
"""

from __future__ import annotations

import time

import pytest
from chaos_world import ChaosSettings


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

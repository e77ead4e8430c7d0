from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import Server, formation_processes, keeper_processes  # noqa: E402

CHAOS_DEFAULT_MINUTES = 1.25  # 75 s of chaos: long enough for every kind of kill, short for CI


def pytest_addoption(parser: pytest.Parser) -> None:
    """The chaos run's options (tests/chaos), here so that pytest knows them before it parses
    the command line, whichever tests are named."""
    group = parser.getgroup("chaos", "seeded chaos run against a real fsup")
    group.addoption(
        "--chaos-minutes",
        type=float,
        default=CHAOS_DEFAULT_MINUTES,
        help=f"how long the chaos run lasts, in minutes (default {CHAOS_DEFAULT_MINUTES})",
    )
    group.addoption(
        "--chaos-seed",
        type=int,
        default=None,
        help="seed of the chaos schedule (default: a fresh one, printed)",
    )


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh fsup home; afterwards no formation process of it may be left running, and its
    log keeper ends by itself (once no pipe and no fsup are left) within a few seconds."""
    root = tmp_path / "muxi"
    root.mkdir()
    yield root
    leftovers = formation_processes(root)
    for proc in leftovers:
        try:
            proc.kill()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
    keepers = keeper_processes(root)
    _, alive = psutil.wait_procs(keepers, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    assert not leftovers, f"formation processes left behind: {[p.pid for p in leftovers]}"
    assert not alive, f"the log keeper did not end: {[p.pid for p in alive]}"


@pytest.fixture
def server(home: Path) -> Iterator[Server]:
    srv = Server(home).start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        code = srv.stop()
        assert code == 0, f"fsup exited with {code}\n{srv.log_tail()}"
    if srv.client is not None:
        srv.client.close()

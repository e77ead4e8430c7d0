from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import Server, formation_processes  # noqa: E402


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh fsup home; afterwards no formation process of it may be left running."""
    root = tmp_path / "muxi"
    root.mkdir()
    yield root
    leftovers = formation_processes(root)
    for proc in leftovers:
        try:
            proc.kill()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
    assert not leftovers, f"formation processes left behind: {[p.pid for p in leftovers]}"


@pytest.fixture
def server(home: Path) -> Iterator[Server]:
    srv = Server(home).start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        code = srv.stop()
        assert code == 0, f"fsup exited with {code}\n{srv.log_tail()}"
    if srv.client is not None:
        srv.client.close()

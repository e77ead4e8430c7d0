"""A block of formation ports that no other test run on this machine uses at the same time.

Each test process claims one block of `BLOCK` ports in 20000-31999 (below Linux's ephemeral
range, where fsup's own `--port 0` listeners land) by holding an exclusive `flock` on a file
named after the block for as long as it lives. A second `pytest` started meanwhile finds the
block taken and moves to the next one, so two runs never hand the same port to formations.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO

BLOCK = 500
FIRST, LAST = 20000, 31999
_held: list[IO[bytes]] = []


def claim_block() -> tuple[int, int]:
    """Claim a free block for this process; return its first and last port."""
    folder = Path(tempfile.gettempdir()) / f"fsup-test-ports-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    for low in range(FIRST, LAST + 1 - BLOCK + 1, BLOCK):
        handle = open(folder / f"{low}.lock", "wb")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held.append(handle)
        atexit.register(handle.close)  # releases the lock; quiet at exit
        return low, low + BLOCK - 1
    raise RuntimeError(f"every test port block in {FIRST}-{LAST} is taken by other test runs")


PORT_LOW, PORT_HIGH = claim_block()
PORT_RANGE = f"{PORT_LOW}-{PORT_HIGH}"

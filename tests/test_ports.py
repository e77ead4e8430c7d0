"""The port pool: skips ports in use, says so when exhausted, reuses released ports last."""

from __future__ import annotations

import socket

import pytest

from supervisor.core.errors import FsupError
from supervisor.runtime.ports import PortPool


def free_block(size: int) -> int:
    """A base port with `size` free ports after it (probed, best effort)."""
    for base in range(23000, 24000, size):
        pool = PortPool(base, base + size - 1)
        try:
            [pool.allocate() for _ in range(size)]
        except FsupError:
            continue
        return base
    raise AssertionError("no free block of ports")


def test_ports_in_use_are_skipped() -> None:
    base = free_block(3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base))
        busy.listen()
        pool = PortPool(base, base + 2)
        assert [pool.allocate(), pool.allocate()] == [base + 1, base + 2]
        with pytest.raises(FsupError) as info:
            pool.allocate()
    assert info.value.code == "PORTS_EXHAUSTED" and "--port-range" in info.value.message


def test_release_and_reserve() -> None:
    base = free_block(3)
    pool = PortPool(base, base + 2)
    first = pool.allocate()
    pool.release(first)
    assert pool.allocate() == base + 1  # round robin: the released port comes last
    pool.reserve(base + 2)
    assert pool.allocate() == first
    stats = pool.statistics()
    assert (stats.range, stats.allocated, stats.available) == (f"{base}-{base + 2}", 3, 0)

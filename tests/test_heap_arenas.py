"""`fsup serve` caps glibc's malloc heaps at start (issue 17): threads that come and go
(the early listener, trio's worker threads) each took a heap of their own, and the free holes
spread over them crept into the server's RSS under churn."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from supervisor.cli.serve import HEAP_ARENAS

# In a fresh interpreter: optionally cap the heaps, then 6 threads allocating at once (a
# barrier keeps them all alive, so none hands its heap back for the next to reuse), then
# count the heaps in glibc's own report (`malloc_info`'s XML).
PROGRAM = """
import ctypes, sys, tempfile, threading
from supervisor.cli.serve import limit_heap_arenas
if sys.argv[1] == "capped":
    assert limit_heap_arenas()
barrier = threading.Barrier(7)
def allocate():
    kept = [bytearray(1000) for _ in range(200)]
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(6)]
for t in threads:
    t.start()
barrier.wait()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile() as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(out.name).read().count("<heap nr="))
barrier.wait()
for t in threads:
    t.join()
"""

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc heaps (arenas) are glibc's"
)


def heaps_with_threads(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@glibc_only
def test_threads_share_at_most_two_heaps_once_capped() -> None:
    assert heaps_with_threads("default") > HEAP_ARENAS  # the test can tell: threads take heaps
    assert heaps_with_threads("capped") <= HEAP_ARENAS


@glibc_only
def test_the_processes_fsup_starts_keep_glibcs_default() -> None:
    """mallopt, not MALLOC_ARENA_MAX: the formations fsup starts inherit its environment."""
    child = (
        "import subprocess, sys; from supervisor.cli.serve import limit_heap_arenas; "
        "assert limit_heap_arenas(); "
        "sys.exit(subprocess.run([sys.executable, '-c', sys.argv[1], 'default']).returncode)"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > HEAP_ARENAS

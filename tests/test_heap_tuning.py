"""`fsup serve` sets glibc's malloc at start (issue 17): threads that come and go (the early
listener, trio's worker threads) each took a heap of their own, and blocks of a few hundred
KiB were carved out of the heap once glibc's mmap threshold had risen; the free holes both
left crept into the server's RSS under churn."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from supervisor.cli.serve import HEAP_ARENAS, MMAP_THRESHOLD

# In a fresh interpreter: optionally cap the heaps, then 6 threads allocating at once (a
# barrier keeps them all alive, so none hands its heap back for the next to reuse), then
# count the heaps in glibc's own report (`malloc_info`'s XML).
PROGRAM = """
import ctypes, sys, tempfile, threading
from supervisor.cli.serve import tune_heap
if sys.argv[1] == "tuned":
    assert tune_heap()
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
    assert heaps_with_threads("tuned") <= HEAP_ARENAS


@glibc_only
def test_the_processes_fsup_starts_keep_glibcs_default() -> None:
    """mallopt, not MALLOC_ARENA_MAX: the formations fsup starts inherit its environment."""
    child = (
        "import subprocess, sys; from supervisor.cli.serve import tune_heap; "
        "assert tune_heap(); "
        "sys.exit(subprocess.run([sys.executable, '-c', sys.argv[1], 'default']).returncode)"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > HEAP_ARENAS


# In a fresh interpreter: optionally tune, free a 2 MiB block (glibc served it with mmap: by
# default its free raises the threshold to 2 MiB), then is a 300 KiB block mmapped or carved
# out of the heap? Answered by `mallinfo2`'s count of mmapped blocks.
BLOCK = """
import ctypes, sys
from supervisor.cli.serve import tune_heap
if sys.argv[1] == "tuned":
    assert tune_heap()
class Info(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(2 * 2**20))
before = libc.mallinfo2().hblks
block = libc.malloc(300 * 1024)
print("mmap" if libc.mallinfo2().hblks > before else "heap")
libc.free(block)
"""


def where_a_300_kib_block_goes(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", BLOCK, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@glibc_only
def test_blocks_over_the_threshold_stay_out_of_the_heap_after_a_big_one_is_freed() -> None:
    assert 300 * 1024 > MMAP_THRESHOLD
    assert where_a_300_kib_block_goes("default") == "heap"  # glibc's threshold rose to 2 MiB
    assert where_a_300_kib_block_goes("tuned") == "mmap"

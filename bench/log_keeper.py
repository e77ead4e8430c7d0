"""Benchmark: a formation's output written straight to a file against through the log keeper.

Run: .venv/bin/python bench/log_keeper.py [--mb 100] [--runs 5]
A writer process emits MB megabytes of lines (100 bytes, then 1 KiB), through Python's
buffered stdout as most programs do, RUNS times each way, interleaved:
  direct   the writer's stdout appended to a file (what fsup did before the keeper)
  keeper   the writer's stdout a pipe (1 MiB, as fsup makes it) held by a real keeper, which
           stamps each line and appends it as CRI to the version's file (rotating at 10 MiB)
Prints medians: the writer's wall time each way and its ratio keeper/direct, the time until
the keeper wrote the last line (its `closed` event), the keeper's CPU seconds per MB logged and
its peak RSS; then the keeper's RSS idle with 100 pairs added, and how often two streams
written alternately as fast as possible come back out of order.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from supervisor.core import cri
from supervisor.runtime.keeper import protocol

WRITER = """
import sys
total, width = int(sys.argv[1]), int(sys.argv[2])
line = b"x" * (width - 1) + b"\\n"
out = sys.stdout.buffer
for _ in range(total // width):
    out.write(line)
out.flush()
"""
ALTERNATE = """
import os, sys
for seq in range(int(sys.argv[1])):
    os.write(1 + seq % 2, b"%08d\\n" % seq)
"""
PIPE_SIZE = 1 << 20


class Keeper:
    """A keeper for a temporary home, with one blocking client connection."""

    def __init__(self, home: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.runtime.keeper", "--home", str(home)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == b"ready\n"
        self.process.stdout.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(protocol.socket_name(home))
        self.ps = psutil.Process(self.process.pid)

    def request(self, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        protocol.send(self.sock, message, fds or [])
        while True:
            answer, _ = protocol.recv(self.sock)
            assert answer is not None
            if "event" not in answer:
                return answer

    def add(self, key: str, folder: Path) -> tuple[int, int]:
        """Two new pipes added under `key`; their write ends."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        fcntl.fcntl(out_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        message = {"op": "add", "key": key, "dir": str(folder), "name": "1.0.0"}
        answer = self.request({**message, "max_bytes": 10 << 20, "backups": 100}, [out_r, err_r])
        assert answer == {"ok": True}, answer
        protocol.close_all([out_r, err_r])
        return out_w, err_w

    def closed(self, key: str) -> None:
        while True:
            event, _ = protocol.recv(self.sock)
            if event == {"event": "closed", "key": key}:
                return

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def memory(self, field: str) -> int:
        """VmRSS or VmHWM (peak) in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise LookupError(field)

    def close(self) -> None:
        self.sock.close()
        self.process.kill()
        self.process.wait()


def direct(folder: Path, total: int, width: int) -> float:
    with open(folder / "stdout.log", "ab") as out:
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", WRITER, str(total), str(width)], stdout=out)
        return time.perf_counter() - began


def through_keeper(home: Path, folder: Path, total: int, width: int) -> dict[str, float]:
    keeper = Keeper(home)
    try:
        out_w, err_w = keeper.add("bench", folder)
        cpu = keeper.cpu()
        began = time.perf_counter()
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(total), str(width)], stdout=out_w, stderr=err_w
        )
        protocol.close_all([out_w, err_w])
        writer.wait()
        wrote = time.perf_counter() - began
        keeper.closed("bench")
        return {
            "writer": wrote,
            "done": time.perf_counter() - began,
            "cpu_per_mb": (keeper.cpu() - cpu) / (total / 1e6),
            "peak_rss": keeper.memory("VmHWM"),
        }
    finally:
        keeper.close()


def idle_rss(home: Path, folder: Path, pairs: int = 100) -> tuple[int, int]:
    keeper = Keeper(home)
    ends: list[int] = []
    try:
        for n in range(pairs):
            ends += keeper.add(f"idle{n}", folder / str(n % 10))
        for fd in ends[::2]:
            os.write(fd, b"started\n")
        time.sleep(1.0)
        return keeper.memory("VmRSS"), keeper.memory("RssAnon")
    finally:
        protocol.close_all(ends)
        keeper.close()


def order(home: Path, folder: Path, count: int = 20_000) -> tuple[int, int]:
    """Lines written alternately to stdout and stderr, unbuffered, as fast as possible: how
    many come back after a line written later (file order, which is also stamp order), and
    how many share their neighbour's stamp (read by the same read)."""
    keeper = Keeper(home)
    try:
        out_w, err_w = keeper.add("order", folder)
        subprocess.run([sys.executable, "-c", ALTERNATE, str(count)], stdout=out_w, stderr=err_w)
        protocol.close_all([out_w, err_w])
        keeper.closed("order")
    finally:
        keeper.close()
    lines = [cri.parse(raw) for raw in (folder / "1.0.0.log").read_bytes().splitlines()]
    seqs = [int(line.text) for line in lines if line]
    stamps = [line.ts for line in lines if line]
    assert sorted(seqs) == list(range(count))
    late, highest = 0, -1
    for seq in seqs:  # a line is late when a later-written line came before it
        late += seq < highest
        highest = max(highest, seq)
    shared = sum(1 for a, b in zip(stamps, stamps[1:], strict=False) if a == b)
    return late, shared


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    total = int(args.mb * 1e6)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        for width in (100, 1024):
            plain: list[float] = []
            kept: list[dict[str, float]] = []
            for _ in range(args.runs):  # interleaved, so drift hits both alike
                folder = home / "logs"
                folder.mkdir()
                plain.append(direct(folder, total, width))
                shutil.rmtree(folder)
                kept.append(through_keeper(home, folder, total, width))
                shutil.rmtree(folder)
            writer = median([k["writer"] for k in kept])
            print(f"{args.mb:.0f} MB of {width}-byte lines, median of {args.runs}")
            print(f"  writer, direct to a file   {median(plain):7.3f} s")
            print(f"  writer, through the keeper {writer:7.3f} s  ({writer / median(plain):.2f}x)")
            print(f"  keeper wrote the last line {median([k['done'] for k in kept]):7.3f} s")
            cpu = median([k["cpu_per_mb"] for k in kept])
            print(f"  keeper CPU per MB logged   {cpu * 1000:7.2f} ms")
            peak = median([k["peak_rss"] for k in kept])
            print(f"  keeper peak RSS            {peak / 2**20:7.1f} MiB")
        rss, anon = idle_rss(home, home / "idle")
        print(f"keeper RSS idle, 100 pairs   {rss / 2**20:7.1f} MiB ({anon / 2**20:.1f} MiB anon)")
        late, shared = order(home, home / "order")
        print(f"alternate stdout/stderr as fast as possible, 20000 lines: {late} came late")
        print(f"  (lines that share their neighbour's stamp, read by the same read: {shared})")


if __name__ == "__main__":
    main()

"""Running a real log keeper in tests: start it, talk to it, read what it wrote, and leave no
process behind."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from supervisor.core import cri
from supervisor.runtime.keeper import protocol

DEADLINE = 15.0


@dataclass
class Keeper:
    """A keeper process started by `running_keeper`."""

    home: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def diagnostics(self) -> Path:
        return self.home / "logkeeper.log"


def start_keeper(home: Path, *extra: str) -> tuple[subprocess.Popen[bytes], bytes]:
    """Start a keeper for `home` as fsup does; its process and the word it said."""
    with open(home / "logkeeper.log", "ab") as diagnostics:
        process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.runtime.keeper", "--home", str(home), *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=diagnostics,
            start_new_session=True,
        )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], DEADLINE)
    word = process.stdout.readline() if ready else b""
    process.stdout.close()
    return process, word


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL `process` if it runs, reap it, and check that it is gone."""
    if process.poll() is None:
        process.kill()
    process.wait(DEADLINE)
    assert not psutil.pid_exists(process.pid)


@contextmanager
def running_keeper(home: Path, *extra: str) -> Iterator[Keeper]:
    """A keeper for `home`, killed and reaped at the end whatever happens."""
    process, word = start_keeper(home, *extra)
    try:
        assert word == b"ready\n", (word, read_text(home / "logkeeper.log"))
        yield Keeper(home, process)
    finally:
        stop(process)


def read_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll `check` until it is truthy, under a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Client:
    """A blocking client of the keeper, as fsup's would be: answers and events apart."""

    def __init__(self, home: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(DEADLINE)
        self.sock.connect(protocol.socket_name(home))
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(
        self, message: dict[str, Any], fds: Sequence[int] = ()
    ) -> tuple[dict[str, Any], list[int]]:
        """Send `message` and wait for its answer (events that come first are kept)."""
        protocol.send(self.sock, message, fds)
        return self.answer()

    def answer(self) -> tuple[dict[str, Any], list[int]]:
        while True:
            reply, fds = protocol.recv(self.sock)
            assert reply is not None, "the keeper closed the connection"
            if "event" not in reply:
                return reply, fds
            self.events.append(reply)

    def closed(self, key: str) -> None:
        """Wait for the `closed` event of `key`."""
        while {"event": "closed", "key": key} not in self.events:
            reply, _ = protocol.recv(self.sock)
            assert reply is not None and "event" in reply, reply
            self.events.append(reply)


@dataclass
class Pipes:
    """A process's two pipes as fsup holds them: the write ends (the child's) and, when kept,
    duplicates of the read ends (fsup's fd store)."""

    stdout: int
    stderr: int
    kept: tuple[int, int] | None

    def close(self) -> None:
        protocol.close_all([self.stdout, self.stderr, *(self.kept or ())])


def add(
    client: Client,
    key: str,
    folder: Path,
    name: str = "1.0.0",
    *,
    max_bytes: int = 10**9,
    backups: int = 3,
    keep: bool = False,
) -> Pipes:
    """Make two pipes and `add` their read ends; the test owns the rest."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    message = {
        "op": "add",
        "key": key,
        "dir": str(folder),
        "name": name,
        "max_bytes": max_bytes,
        "backups": backups,
    }
    answer, _ = client.request(message, [out_r, err_r])
    assert answer == {"ok": True}, answer
    if keep:
        return Pipes(out_w, err_w, (out_r, err_r))
    protocol.close_all([out_r, err_r])
    return Pipes(out_w, err_w, None)


def read_log(folder: Path, name: str = "1.0.0") -> list[cri.CriLine]:
    """Every CRI line of a version, oldest backup first."""
    paths = sorted(
        folder.glob(f"{name}.log.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True
    )
    lines = []
    for path in [*paths, folder / f"{name}.log"]:
        if path.exists():
            for raw in path.read_bytes().split(b"\n")[:-1]:
                line = cri.parse(raw)
                assert line is not None, raw
                lines.append(line)
    return lines


def texts(folder: Path, name: str = "1.0.0") -> list[bytes]:
    return [line.text for line in read_log(folder, name)]

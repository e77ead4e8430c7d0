"""Processes the benchmark starts, and the guarantee that none outlives it.

A benchmark that leaves 100 HTTP services or a PM2 daemon behind poisons the next run's
figures and the test suite's ports, so every process goes through `launch` here: it starts
in its own process group (killed as a group), carries the run's marker variable
(`FSUP_BENCH_RUN`, inherited by whatever it spawns, even a daemon that double-forks), and is
remembered. `cleanup()` kills the remembered groups, then sweeps every process on the machine
that carries the marker. It also measures: CPU and RSS of a process tree, split into the
supervisor's own processes and the services it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import psutil

MARKER = "FSUP_BENCH_RUN"
RUN_ID = uuid.uuid4().hex[:12]
SERVICE_MARK = "BENCH_NAME"  # set for the services only: tells them from their supervisor

_launched: list[subprocess.Popen[bytes]] = []


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of everything started: ours, the marker, no proxy settings."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env[MARKER] = RUN_ID
    env.update(extra)
    return env


def launch(
    argv: list[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session (its own process group), remembered for cleanup."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(
            argv,
            env=env or bench_env(),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    _launched.append(proc)
    return proc


def run_quiet(
    argv: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """A short command (a control CLI): output captured, never raises on failure."""
    return subprocess.run(
        argv,
        env=env or bench_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def marked(run_id: str = RUN_ID) -> list[psutil.Process]:
    """Live processes that carry this run's marker (zombies left out)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARKER) == run_id:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def services(run_id: str = RUN_ID) -> dict[str, psutil.Process]:
    """The benchmark services alive now, by their name."""
    found = {}
    for proc in marked(run_id):
        try:
            name = proc.environ().get(SERVICE_MARK)
        except (psutil.Error, OSError):
            continue
        if name:
            found[name] = proc
    return found


def cleanup() -> int:
    """Kill every remembered process group, then every marked process. Returns how many
    marked processes the sweep had to kill (0 when the runners cleaned up after themselves)."""
    for proc in _launched:
        if proc.poll() is None:
            kill_group(proc)
    _launched.clear()
    left = marked()
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=5)
    return len(left)


def wait_gone(pids: Iterable[int], timeout: float = 120.0) -> bool:
    """Poll until none of `pids` is alive (zombies count as gone)."""
    pending = set(pids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    pending.discard(pid)
            except psutil.NoSuchProcess:
                pending.discard(pid)
        if pending:
            time.sleep(0.005)
    return not pending


def split_tree(root_pids: Iterable[int]) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(the supervisor's own processes, the services) under `root_pids`; a service's own
    children count as the service's."""
    own, svc = [], []
    for pid in root_pids:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        service_pids: set[int] = set()
        for proc in tree:
            try:
                is_service = SERVICE_MARK in proc.environ() or proc.ppid() in service_pids
            except psutil.Error:
                continue
            if is_service:
                service_pids.add(proc.pid)
                svc.append(proc)
            else:
                own.append(proc)
    return own, svc


def cpu_seconds(procs: Iterable[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def rss_mib(procs: Iterable[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20

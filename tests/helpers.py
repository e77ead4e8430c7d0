"""Helpers for end-to-end tests: a real fsup server process, bundles, leftover checks."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import httpx
import psutil
import trio
from port_blocks import PORT_RANGE

from supervisor.cli.client import RpcClient

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "formations"
NASTY = Path(__file__).resolve().parent / "fixtures" / "nasty.py"


def make_bundle(
    files: dict[str, str | bytes], fmt: str = "tar.gz", top: str | None = "app"
) -> bytes:
    """A bundle holding `files` (name -> content), under one top folder unless `top` is None."""
    buffer = io.BytesIO()
    prefix = f"{top}/" if top else ""
    if fmt == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, content in files.items():
                archive.writestr(prefix + name, content)
        return buffer.getvalue()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def manifest(formation_id: str, mode: str = "serve", version: str = "1.0.0", **extra: Any) -> str:
    """A formation.yaml running the nasty fixture in `mode` (YAML flow style via JSON)."""
    doc: dict[str, Any] = {
        "id": formation_id,
        "version": version,
        "command": ["python3", "nasty.py", mode],
        "health": {"http": "/health", "interval": 0.1, "timeout": 10},
        "stop": {"timeout": 3},
    }
    doc.update(extra)
    return json.dumps(doc)


def nasty_bundle(
    formation_id: str, mode: str = "serve", fmt: str = "tar.gz", **extra: Any
) -> bytes:
    return make_bundle(
        {"formation.yaml": manifest(formation_id, mode, **extra), "nasty.py": NASTY.read_text()},
        fmt,
    )


def example_bundle(name: str) -> bytes:
    folder = EXAMPLES / name
    return make_bundle({p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}, top=name)


def api_client(server: Server) -> httpx.Client:
    """An /api/v1 client carrying the bearer token from the loopback bootstrap."""
    token = httpx.get(f"{server.url}/api/v1/auth/bootstrap", trust_env=False).json()["token"]
    return httpx.Client(
        base_url=f"{server.url}/api/v1",
        trust_env=False,
        timeout=30,
        headers={"Authorization": f"Bearer {token}"},
    )


def run_to_end(
    argv: list[str], env: dict[str, str], within_s: float, what: str
) -> subprocess.CompletedProcess[str]:
    """Run `argv` from the repo to its end, its output captured as text; the test fails with
    `what` if it runs past `within_s` (a deadline for a loaded machine, not a speed check)."""
    try:
        return subprocess.run(
            argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=within_s, check=False
        )
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"{what} within {within_s}s: {expired.stderr!r}") from None


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy (and return it), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


async def wait_until(
    predicate: Callable[[], Any],
    within: float = 20.0,
    interval: float = 0.005,
    what: str | None = None,
) -> Any:
    """`wait_for` inside trio: poll until `predicate()` is truthy (and return it), or fail
    after `within` seconds of the current clock (real time unless the test runs on a
    MockClock). For what another task or a worker thread does; never proves an absence."""
    with trio.move_on_after(within):
        while not (value := predicate()):  # noqa: ASYNC110 - observing from outside
            await trio.sleep(interval)
        return value
    raise AssertionError(f"{what or predicate} not met within {within}s")


def formation_processes(home: Path, formation_id: str | None = None) -> list[psutil.Process]:
    """Live processes started for this home's formations (children included)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.Error, OSError):
            continue
        if env.get("MUXI_HOME") == str(home) and "FORMATION_ID" in env:
            if formation_id is None or env["FORMATION_ID"] == formation_id:
                found.append(proc)
    return found


def keeper_processes(home: Path) -> list[psutil.Process]:
    """The home's log keeper (`python -m supervisor.runtime.keeper --home HOME`), if it runs."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "supervisor.runtime.keeper" in cmdline and str(home) in cmdline:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.Error:
                continue
    return found


def main_processes(home: Path, formation_id: str) -> list[psutil.Process]:
    """The formation's top processes (those whose parent is not one of its own). A process
    that exits while this looks (a stopping formation's) is simply not among them."""
    procs = formation_processes(home, formation_id)
    pids = {p.pid for p in procs}
    found = []
    for proc in procs:
        try:
            if proc.ppid() not in pids:
                found.append(proc)
        except psutil.Error:
            continue
    return found


class Server:
    """`python -m supervisor serve` in a subprocess on a free port, with its own home."""

    def __init__(self, home: Path, port_range: str = PORT_RANGE) -> None:
        self.home = home
        self.port_range = port_range
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.client: RpcClient | None = None

    def start(self, *extra: str, timeout: float = 30.0) -> Server:
        env = {**os.environ, "MUXI_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        log = open(self.home / "fsup-test.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "supervisor",
                "serve",
                "--port",
                "0",
                "--port-range",
                self.port_range,
                *extra,
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        log.close()
        self.url = self._read_url(timeout)
        creds = json.loads((self.home / "server" / "credentials.json").read_text())
        if self.client is not None:
            self.client.close()
        self.client = RpcClient(self.url, creds["key_id"], creds["secret_key"])
        return self

    def _read_url(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(b"fsup listening on "):
                    return line.decode().split()[-1]
            if self.proc.poll() is not None:
                break
        raise AssertionError(f"fsup did not start: {line!r}\n{self.log_tail()}")

    def log_tail(self) -> str:
        path = self.home / "fsup-test.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.client is not None:
            self.client.close()
            self.client = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def rpc(self) -> RpcClient:
        assert self.client is not None
        return self.client

    def formation(self, formation_id: str) -> dict[str, Any]:
        return self.rpc.call("GET", f"/rpc/formations/{formation_id}")


@contextmanager
def serving(home: Path, *bundles: bytes) -> Iterator[Server]:
    """A started fsup in `home` with `bundles` deployed. On leaving, it is stopped and the test
    fails if it exited with an error or left a formation process behind (killed first)."""
    server = Server(home).start()
    with stops_clean(server, home):
        for bundle in bundles:
            server.rpc.deploy(bundle)
        yield server


@contextmanager
def stops_clean(server: Server, home: Path) -> Iterator[None]:
    """Stop `server` at the end, whatever happened; it must stop cleanly and leave no
    formation process behind (any left is killed first)."""
    try:
        yield
    finally:
        code = server.stop()
        leftovers = formation_processes(home)
        for proc in leftovers:
            proc.kill()
    assert code == 0, server.log_tail()
    assert not leftovers


class ClientThreads:
    """`clients` threads running `_run` (a subclass's loop until `_stop` is set), started on
    entering and stopped and joined on leaving; `_lock` guards what they count."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        raise NotImplementedError

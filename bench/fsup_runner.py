"""fsup driven like an operator drives it: `fsup serve --deploy DIR`, Ctrl-C, `fsup serve`.

The N services become N formation folders (formation.yaml + the same svc.py), with fsup's
defaults for health (HTTP /health, its default interval), restart and liveness, so the figures
are what a user gets out of the box. Cold start is `serve --deploy` on an empty home; "stop
all" is SIGTERM to the server (it stops every formation gracefully); restore is a plain
`serve` on the same home, which brings back what was running.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import procs
import workload
from peer_runners import Runner

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from supervisor.cli.client import RpcClient  # noqa: E402


class Fsup(Runner):
    name = "fsup"
    restores = True

    def __init__(self, workdir: Path, n: int, port: int, port_range: str) -> None:
        super().__init__(workdir, n, 0)
        self.port = port
        self.port_range = port_range
        self.url = f"http://127.0.0.1:{port}"
        self.home = workdir / "home"
        self.home.mkdir()
        self.formations = workdir / "formations"
        for name in self.names:
            self.write_formation(self.formations / name, name)
        self.client: RpcClient | None = None

    def write_formation(self, folder: Path, name: str, **env: str) -> Path:
        workload.write_service(folder)
        manifest = {
            "id": name,
            "version": "1.0.0",
            "command": [workload.SERVICE_PYTHON, "svc.py"],
            "env": {
                procs.SERVICE_MARK: name,
                "BENCH_PORTDIR": str(self.portdir),
                procs.MARKER: procs.RUN_ID,
                **env,
            },
            "health": {"http": "/health"},
        }
        (folder / "formation.yaml").write_text(json.dumps(manifest))
        return folder

    def env(self) -> dict[str, str]:
        return procs.bench_env(MUXI_HOME=str(self.home), PYTHONUNBUFFERED="1")

    def _serve(self, *extra: str) -> None:
        self.close_client()
        self.proc = procs.launch(
            [
                sys.executable,
                "-m",
                "supervisor",
                "serve",
                "--port",
                str(self.port),
                "--port-range",
                self.port_range,
                *extra,
            ],
            env=self.env(),
            cwd=REPO,
            log=self.workdir / "fsup.out",
        )

    def start(self) -> None:
        self._serve("--deploy", str(self.formations))

    def restore(self) -> None:
        self._serve()

    @property
    def rpc(self) -> RpcClient:
        if self.client is None:
            creds = json.loads((self.home / "server" / "credentials.json").read_text())
            self.client = RpcClient(self.url, creds["key_id"], creds["secret_key"])
        return self.client

    def close_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def wait_settled(self, timeout: float = 60.0) -> None:
        # A formation answers /health before fsup's start gate has seen it; SIGTERM in that
        # gap makes fsup remove the formation ("first start failed"), so restore would lack it.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = self.rpc.call("GET", "/rpc/formations")["formations"]
            ready = {
                f.get("id", f.get("formation_id"))
                for f in items
                if f.get("status") == "running" and f.get("healthy")
            }
            if ready >= set(self.names):
                return
            time.sleep(0.05)
        raise TimeoutError("fsup: formations not all running and healthy")

    def describe(self, name: str) -> str:
        try:
            state = self.rpc.call("GET", f"/rpc/formations/{name}")
        except Exception as exc:  # noqa: BLE001 - only for an error message
            state = repr(exc)
        return f"{super().describe(name)}; fsup says {state}"

    def stop_all(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 90.0) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                procs.kill_group(self.proc)

    def shutdown(self) -> None:
        self.close_client()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.wait_exit()
        super().shutdown()

"""How each supervisor is started, stopped and shut down on the same workload.

A runner writes its supervisor's configuration for N services, launches it (timing is the
caller's: from `start()` until every service answers), names the supervisor's own pids (for
RSS and CPU), stops all services on command and shuts its supervisor down for good. Each
peer runs with its defaults except what the workload needs (restart on exit, one process per
service, logs in the temporary folder), as an operator would configure it. The floor is no
supervisor at all: N `Popen`s, the time below which no supervisor can start them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import procs
import workload
from peers import Peer


class Runner:
    name = "?"
    supervises = True  # False: no restart after a kill, no supervisor process to weigh
    restores = False

    def __init__(self, workdir: Path, n: int, port_base: int) -> None:
        self.workdir = workdir
        self.n = n
        self.port_base = port_base
        self.portdir = workdir / "ports"
        self.script = workload.write_service(workdir / "app")
        self.names = workload.names(n)
        self.proc: subprocess.Popen[bytes] | None = None

    def service_env(self, i: int) -> dict[str, str]:
        return {
            "PORT": str(self.port_base + i),
            procs.SERVICE_MARK: self.names[i],
            "BENCH_PORTDIR": str(self.portdir),
            procs.MARKER: procs.RUN_ID,
        }

    def start(self) -> None:
        raise NotImplementedError

    def wait_settled(self) -> None:
        """Return once the supervisor itself considers every service started (a stop sent
        earlier would measure an interrupted start, not a stop)."""

    def describe(self, name: str) -> str:
        """What the supervisor says about service `name` (for error messages)."""
        return f"port file {workload.port_of(self.portdir, name)}"

    def supervisor_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def stop_all(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        if self.proc is not None:
            procs.kill_group(self.proc)


class Floor(Runner):
    name = "floor"
    supervises = False

    def start(self) -> None:
        self.children = [
            procs.launch(
                [workload.SERVICE_PYTHON, str(self.script)],
                env=procs.bench_env(**self.service_env(i)),
            )
            for i in range(self.n)
        ]

    def supervisor_pids(self) -> list[int]:
        return []

    def stop_all(self) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            child.wait()

    def shutdown(self) -> None:
        for child in getattr(self, "children", []):
            procs.kill_group(child)


class Supervisord(Runner):
    name = "supervisord"

    def __init__(self, workdir: Path, n: int, port_base: int, peer: Peer) -> None:
        super().__init__(workdir, n, port_base)
        self.peer = peer
        self.conf = workdir / "supervisord.conf"
        sock = workdir / "s.sock"
        lines = [
            "[unix_http_server]",
            f"file={sock}",
            "",
            "[supervisord]",
            "nodaemon=true",
            f"logfile={workdir / 'supervisord.log'}",
            f"pidfile={workdir / 'supervisord.pid'}",
            f"childlogdir={workdir}",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{sock}",
            "",
        ]
        for i, name in enumerate(self.names):
            env = ",".join(f'{k}="{v}"' for k, v in self.service_env(i).items())
            lines += [
                f"[program:{name}]",
                f"command={workload.SERVICE_PYTHON} {self.script}",
                f"environment={env}",
                "autorestart=true",
                "stopasgroup=true",
                "killasgroup=true",
                "stdout_logfile=NONE",
                "stderr_logfile=NONE",
                "",
            ]
        self.conf.write_text("\n".join(lines))

    def ctl(self, *args: str) -> None:
        procs.run_quiet([str(self.peer.paths["supervisorctl"]), "-c", str(self.conf), *args])

    def start(self) -> None:
        self.proc = procs.launch(
            [str(self.peer.paths["supervisord"]), "-c", str(self.conf)],
            log=self.workdir / "supervisord.out",
        )

    def stop_all(self) -> None:
        self.ctl("stop", "all")

    def shutdown(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.ctl("shutdown")
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        super().shutdown()


class Circus(Runner):
    name = "circus"

    def __init__(
        self, workdir: Path, n: int, port_base: int, peer: Peer, endpoint_port: int
    ) -> None:
        super().__init__(workdir, n, port_base)
        self.peer = peer
        self.endpoint = f"tcp://127.0.0.1:{endpoint_port}"
        self.conf = workdir / "circus.ini"
        lines = [
            "[circus]",
            f"endpoint = {self.endpoint}",
            f"pubsub_endpoint = tcp://127.0.0.1:{endpoint_port + 1}",
            "statsd = False",
            "",
        ]
        for i, name in enumerate(self.names):
            lines += [
                f"[watcher:{name}]",
                f"cmd = {workload.SERVICE_PYTHON} {self.script}",
                "numprocesses = 1",
                "copy_env = True",
                "",
                f"[env:{name}]",
            ]
            lines += [f"{k} = {v}" for k, v in self.service_env(i).items()] + [""]
        self.conf.write_text("\n".join(lines))

    def ctl(self, *args: str) -> None:
        procs.run_quiet(
            [
                str(self.peer.paths["circusctl"]),
                "--endpoint",
                self.endpoint,
                "--timeout",
                "60",
                *args,
            ]
        )

    def start(self) -> None:
        self.proc = procs.launch(
            [
                str(self.peer.paths["circusd"]),
                "--log-output",
                str(self.workdir / "circus.log"),
                str(self.conf),
            ],
            log=self.workdir / "circusd.out",
        )

    def stop_all(self) -> None:
        self.ctl("stop")

    def shutdown(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.ctl("quit")
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        super().shutdown()


class Pm2(Runner):
    name = "pm2"

    def __init__(self, workdir: Path, n: int, port_base: int, peer: Peer) -> None:
        super().__init__(workdir, n, port_base)
        self.peer = peer
        self.home = workdir / "pm2home"
        self.home.mkdir()
        self.ecosystem = workdir / "ecosystem.json"
        apps = [
            {
                "name": name,
                "script": str(self.script),
                "interpreter": workload.SERVICE_PYTHON,
                "cwd": str(self.script.parent),
                "autorestart": True,
                "env": self.service_env(i),
            }
            for i, name in enumerate(self.names)
        ]
        self.ecosystem.write_text(json.dumps({"apps": apps}))

    def env(self) -> dict[str, str]:
        return procs.bench_env(PM2_HOME=str(self.home), PM2_DISCRETE_MODE="true")

    def pm2(self, *args: str) -> subprocess.CompletedProcess[str]:
        return procs.run_quiet([str(self.peer.paths["pm2"]), *args], env=self.env())

    def start(self) -> None:
        # The CLI starts the daemon (detached, in its own session) and returns.
        self.proc = procs.launch(
            [str(self.peer.paths["pm2"]), "start", str(self.ecosystem)],
            env=self.env(),
            log=self.workdir / "pm2-cli.out",
        )

    def supervisor_pids(self) -> list[int]:
        try:
            pid = int((self.home / "pm2.pid").read_text())
        except (OSError, ValueError):
            return []
        return [pid]

    def stop_all(self) -> None:
        self.pm2("stop", "all")

    def shutdown(self) -> None:
        if self.home.exists():
            self.pm2("kill")
        for pid in self.supervisor_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        super().shutdown()

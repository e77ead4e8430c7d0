"""The peers fsup is measured against, installed into the bench's own cache folder.

supervisord and circus go into one virtualenv (bench/.peers/venv) from PyPI, PM2 into
bench/.peers/npm from npm; nothing touches fsup's venv or the system. Installing once and
reusing the cache keeps `--quick` under its time budget; a peer that cannot be installed is
reported as such and the run goes on without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".peers"
VENV = CACHE / "venv"
NPM = CACHE / "npm"
PY_PEERS = ("supervisor", "circus")


@dataclass
class Peer:
    name: str
    version: str = ""
    error: str = ""
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error


def _run(argv: list[str], cwd: Path | None = None) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stdout + done.stderr)[-800:]


def _python_peers(log: list[str]) -> tuple[bool, str]:
    if not (VENV / "bin" / "supervisord").exists() or not (VENV / "bin" / "circusd").exists():
        log.append(f"installing {', '.join(PY_PEERS)} into {VENV} (pip)")
        if not (VENV / "bin" / "python").exists():
            ok, out = _run([sys.executable, "-m", "venv", str(VENV)])
            if not ok:
                return False, f"venv: {out}"
        ok, out = _run([str(VENV / "bin" / "pip"), "install", "-q", *PY_PEERS])
        if not ok:
            return False, f"pip install: {out}"
    return True, ""


def _version(argv: list[str]) -> str:
    ok, out = _run(argv)
    return out.strip().splitlines()[-1] if ok and out.strip() else "?"


def ensure(log: list[str]) -> dict[str, Peer]:
    """Install what is missing; return supervisord, circus and pm2, each usable or not."""
    CACHE.mkdir(parents=True, exist_ok=True)
    peers = {name: Peer(name) for name in ("supervisord", "circus", "pm2")}
    ok, error = _python_peers(log)
    for name, binaries in (
        ("supervisord", ("supervisord", "supervisorctl")),
        ("circus", ("circusd", "circusctl")),
    ):
        peer = peers[name]
        peer.paths = {b: VENV / "bin" / b for b in binaries}
        if not ok:
            peer.error = error
        elif not all(p.exists() for p in peer.paths.values()):
            peer.error = f"{binaries[0]} missing from {VENV}"
        else:
            peer.version = _version([str(peer.paths[binaries[0]]), "--version"])
    pm2 = peers["pm2"]
    binary = NPM / "node_modules" / ".bin" / "pm2"
    if not binary.exists():
        if shutil.which("npm") is None:
            pm2.error = "npm not found"
        else:
            log.append(f"installing pm2 into {NPM} (npm)")
            NPM.mkdir(parents=True, exist_ok=True)
            ok, out = _run(
                ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NPM), "pm2"], cwd=NPM
            )
            if not ok:
                pm2.error = f"npm install pm2: {out}"
    if not pm2.error:
        if binary.exists():
            pm2.paths = {"pm2": binary}
            package = NPM / "node_modules" / "pm2" / "package.json"
            pm2.version = json.loads(package.read_text()).get("version", "?")
            pm2.version += f" (node {_version(['node', '--version'])})"
        else:
            pm2.error = f"pm2 missing from {NPM}"
    return peers

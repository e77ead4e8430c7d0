"""The hostile corpus's target: one real fsup with a small fleet and a finished search, how a
case sends to it, and the snapshot of everything a hostile request must leave untouched
(formations, their processes, the files under the home and outside it, the searches, fsup's
log), compared after each case, with the repairs that keep one defect from cascading.

The raw HTTP it sends is `hostile_wire.py`; the contract's error checks are
`hostile_contract.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from helpers import REPO, Server, formation_processes, nasty_bundle, wait_for
from hostile_contract import BOUND_S
from hostile_wire import Headers, Reply, Signer, exchange, request_bytes

from supervisor.cli.client import RpcClient

# A name planted by traversal and absolute-path cases; it must never appear outside the home.
PLANT = f"fsup-hostile-plant-{uuid.uuid4().hex[:10]}"
SEARCH_KEYWORD = "hostile baseline"


FORMATION_FIELDS = (
    "id",
    "version",
    "status",
    "pid",
    "port",
    "restart_count",
    "versions",
    "update_in_progress",
    "desired",
    "healthy",
)
VOLATILE_HOME = ("server/logs/", "server/state.db", "fsup-test.log")


@dataclass
class Snapshot:
    formations: dict[str, dict[str, Any]]
    processes: dict[int, str]
    files: dict[str, str]
    outside: set[str]
    searches: dict[str, Any]
    tracebacks: int


def _digest(path: Path) -> str:
    try:
        if path.is_symlink():
            return "symlink->" + os.readlink(path)
        if path.is_dir():
            return "dir"
        if not path.is_file():
            return "special"
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


class Target:
    """One real fsup with formations and a search, plus what a hostile case needs."""

    def __init__(self, root: Path, fleet: Sequence[str]) -> None:
        self.root = root
        self.home = root / "muxi"
        self.home.mkdir()
        self.canary_dir = root / "canary"
        self.canary_dir.mkdir()
        self.fleet = tuple(fleet)
        self.server = Server(self.home)
        self.deaths: list[str] = []
        self.extra_checks: list[Callable[[], list[str]]] = []
        self.baseline_search = ""
        self.token = ""

    # ---- life

    def _connect_clients(self) -> None:
        creds = json.loads((self.home / "server" / "credentials.json").read_text())
        self.signer = Signer(creds["key_id"], creds["secret_key"])
        self.rpc = RpcClient(self.server.url, creds["key_id"], creds["secret_key"], timeout=30)
        self.http = httpx.Client(base_url=self.url, trust_env=False, timeout=10)
        self.token = self.http.get("/api/v1/auth/bootstrap").json()["token"]

    def _close_clients(self) -> None:
        for client in (getattr(self, "rpc", None), getattr(self, "http", None)):
            if client is not None:
                client.close()

    def launch(self) -> Target:
        self.server.start()
        self._connect_clients()
        for formation_id in self.fleet:
            self.rpc.deploy(nasty_bundle(formation_id, search={"path": "/search"}))
        created = self.api("POST", "/searches", {"keyword": SEARCH_KEYWORD, "autostart": True})
        self.baseline_search = created["search"]["id"]
        wait_for(
            lambda: (
                self.api("GET", f"/searches/{self.baseline_search}")["search"]["state"]
                in ("complete", "stopped")
            )
        )
        return self

    def close(self) -> tuple[int, list[int]]:
        """Stop fsup; return its exit code and the pids of formation processes left behind."""
        self._close_clients()
        code = self.server.stop() if self.server.proc is not None else 0
        leftovers = formation_processes(self.home)
        for proc in leftovers:
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
        return code, [p.pid for p in leftovers]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def addr(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    @property
    def host_header(self) -> str:
        return self.url.removeprefix("http://")

    def alive(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(
            method, f"/api/v1{path}", json=body, headers={"Authorization": f"Bearer {self.token}"}
        )
        response.raise_for_status()
        return response.json()

    # ---- sending

    def check_secrets(self, data: bytes) -> None:
        """No answer of fsup, to anyone, may carry its bearer token or its HMAC secret."""
        assert self.token.encode() not in data, "a response carried fsup's bearer token"
        assert self.signer.secret_key.encode() not in data, "a response carried the HMAC secret"

    def send(self, data: bytes | Iterable[tuple[bytes, float]], **options: Any) -> Reply:
        reply = exchange(self.addr, data, **options)
        self.check_secrets(reply.raw)
        return reply

    def request(
        self,
        method: str,
        target: str | bytes,
        headers: Headers = (),
        body: bytes = b"",
        *,
        auth: str = "none",
        **options: Any,
    ) -> Reply:
        """One request; auth: none, bearer (the /api/v1 token) or signed (HMAC over exactly
        `target` and `body`)."""
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if auth == "bearer":
            pairs.append(("Authorization", f"Bearer {self.token}"))
        elif auth == "signed":
            pairs += self.signer.headers(method, target, body)
        data = request_bytes(method, target, pairs, body, host=self.host_header)
        return self.send(data, **options)

    # ---- snapshot

    def formation_pids(self) -> dict[str, int]:
        return {f["id"]: f["pid"] for f in self.rpc.call("GET", "/rpc/formations")["formations"]}

    def snapshot(self) -> Snapshot:
        formations = {
            f["id"]: {k: f.get(k) for k in FORMATION_FIELDS}
            for f in self.rpc.call("GET", "/rpc/formations")["formations"]
        }
        processes = {}
        for proc in formation_processes(self.home):
            try:
                processes[proc.pid] = " ".join(proc.cmdline())[:80]
            except Exception:  # noqa: BLE001 - it may have just gone
                continue
        files = {}
        for path in sorted(self.home.rglob("*")):
            rel = path.relative_to(self.home).as_posix() + ("/" if path.is_dir() else "")
            if rel.startswith(VOLATILE_HOME):
                continue
            files[rel] = _digest(path)
        searches = {s["id"]: s for s in self.api("GET", "/searches")["searches"]}
        log_text = (self.home / "fsup-test.log").read_text(errors="replace")
        return Snapshot(
            formations,
            processes,
            files,
            self.outside(),
            searches,
            log_text.count("Traceback (most recent call last)"),
        )

    def outside(self) -> set[str]:
        """Names outside the home where a planted file could land."""
        found = {p.as_posix() for p in self.root.iterdir() if p.name not in ("muxi", "canary")}
        found |= {p.as_posix() for p in self.canary_dir.rglob("*")}
        for folder in (Path("/tmp"), Path("/"), REPO, self.root.parent, Path.cwd()):
            try:
                found |= {p.as_posix() for p in folder.glob(PLANT + "*")}
            except OSError:
                continue
        return found

    def verify(self, before: Snapshot) -> list[str]:
        """What changed or broke since `before` (empty: nothing)."""
        problems: list[str] = []
        try:
            health = self.http.get("/health", timeout=BOUND_S)
            if health.status_code != 200 or health.json() != {"status": "healthy"}:
                problems.append(f"GET /health answered {health.status_code} {health.text[:200]}")
        except httpx.HTTPError as exc:
            problems.append(f"GET /health failed after the case: {exc!r}")
        if problems and self.server.proc is not None:
            try:  # an fsup on its way out: say so, rather than "connection refused"
                self.server.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
        if not self.alive():
            code = self.server.proc.poll() if self.server.proc else None
            self.deaths.append(f"exit {code}")
            return [f"fsup EXITED (code {code}); log tail:\n{self.server.log_tail()[-2500:]}"]
        if problems:
            return problems
        try:
            after = self.snapshot()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            return [*problems, f"could not take the snapshot after the case: {exc!r}"]
        if after.formations != before.formations:
            problems.append(
                f"formations changed:\n  before {before.formations}\n  after  {after.formations}"
            )
        if after.processes != before.processes:
            problems.append(
                f"formation processes changed: before {before.processes}, after {after.processes}"
            )
        if after.files != before.files:
            added = sorted(set(after.files) - set(before.files))
            removed = sorted(set(before.files) - set(after.files))
            changed = sorted(
                k for k in set(after.files) & set(before.files) if after.files[k] != before.files[k]
            )
            problems.append(
                f"files under the home changed: added {added[:10]}, removed "
                f"{removed[:10]}, changed {changed[:10]}"
            )
        if after.outside != before.outside:
            problems.append(
                f"files appeared outside the home: {sorted(after.outside - before.outside)}"
            )
        if after.searches != before.searches:
            problems.append(
                f"searches changed:\n  before {before.searches}\n  after  {after.searches}"
            )
        if after.tracebacks != before.tracebacks:
            problems.append(
                f"fsup logged {after.tracebacks - before.tracebacks} new "
                f"traceback(s); log tail:\n{self.server.log_tail()[-2500:]}"
            )
        for check in self.extra_checks:
            problems += check()
        return problems

    # ---- repair between cases, so one defect does not cascade into the next case

    def restore(self) -> None:
        if not self.alive():
            self._close_clients()
            self.server.stop()  # reaps the dead process and closes its pipe
            self.server.start()
            self._connect_clients()
            wait_for(
                lambda: (
                    {
                        f["id"]: f["status"]
                        for f in self.rpc.call("GET", "/rpc/formations")["formations"]
                    }.keys()
                    >= set(self.fleet)
                ),
                timeout=30,
            )
        listed = {f["id"]: f for f in self.rpc.call("GET", "/rpc/formations")["formations"]}
        for formation_id, item in listed.items():
            try:
                quoted = urllib.parse.quote(formation_id, safe="")
                if formation_id not in self.fleet:
                    self.rpc.call("DELETE", f"/rpc/formations/{quoted}")
                elif item.get("status") in ("stopped", "crashed"):
                    self.rpc.call("POST", f"/rpc/formations/{quoted}/start")
            except Exception:  # noqa: BLE001 - best effort; the next snapshot tells
                continue
        for formation_id in self.fleet:
            if formation_id not in listed:
                try:
                    self.rpc.deploy(nasty_bundle(formation_id, search={"path": "/search"}))
                except Exception:  # noqa: BLE001 - best effort
                    continue
        for search_id in self.api("GET", "/searches")["searches"]:
            if search_id["id"] != self.baseline_search:
                try:
                    self.api("DELETE", f"/searches/{search_id['id']}")
                except httpx.HTTPError:
                    continue

"""The chaos run's shared world: the fsup under test, what every client saw, what went wrong.

Every thread of the run (the chaos driver, the checker, the clients) talks to fsup through a
`Client`, which records each exchange, so that a 5xx can never go unnoticed, and which knows
when fsup is down on purpose, so that a refused connection during a planned kill is not
mistaken for a defect. Findings are recorded, never raised inside a thread: the run goes on and
reports every defect it meets, not only the first.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from helpers import Server

from supervisor.core.hmac_auth import signed_headers

REQUEST_TIMEOUT_S = 45.0  # a stop of the stubborn formation (3 s) plus a start, with margin
LOG_LINE = re.compile(r"^ts=(\S+) level=(\w+) logger=(\S+) msg=")


@dataclass(frozen=True)
class ChaosSettings:
    """The run's length and seed (from `--chaos-minutes` and `--chaos-seed`)."""

    seconds: float
    seed: int


@dataclass
class Exchange:
    """One request a client sent, and what came back (status None: no answer)."""

    kind: str  # rpc | api | proxy
    method: str
    path: str
    started: float
    ended: float
    epoch: int
    status: int | None = None
    code: str | None = None
    body: Any = None
    text: str = ""

    def describe(self) -> str:
        span = f"{self.ended - self.started:.2f}s"
        what = f"{self.status} {self.code or ''}".strip() if self.status else "no answer"
        return f"{self.method} {self.path} -> {what} after {span}: {self.text[:240]}"


@dataclass
class Finding:
    """A defect seen during the run: what, when, and what the server logged around it."""

    kind: str
    ts: float
    summary: str
    detail: str = ""

    def signature(self) -> str:
        return f"{self.kind}: {re.sub(r'[0-9]+', 'N', self.summary)[:160]}"


@dataclass
class Recorder:
    """Everything the run observed, guarded by one lock (threads write, the summary reads)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[str] = field(default_factory=Counter)
    five_xx: list[Exchange] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    # The file fsup appends each fired fault to before raising it (FSUP_TEST_FAULTS_LEDGER):
    # unlike fsup's own list, it outlives a SIGKILL of fsup.
    ledger: Path | None = None
    findings: list[Finding] = field(default_factory=list)
    # (time, formation id or "*", why): every event that may disturb a formation.
    disruptions: list[tuple[float, str, str]] = field(default_factory=list)
    convergence: list[tuple[str, float]] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)
    # (formation id, start, end) of each operator request, retries included.
    ops: list[tuple[str, float, float]] = field(default_factory=list)

    def count(self, exchange: Exchange) -> None:
        with self.lock:
            self.requests[f"{exchange.kind} {exchange.status}"] += 1
            if exchange.status is not None and exchange.status >= 500:
                self.five_xx.append(exchange)

    def find(self, kind: str, summary: str, detail: str = "") -> None:
        with self.lock:
            self.findings.append(Finding(kind, time.time(), summary, detail))

    def disrupt(self, target: str, why: str, at: float | None = None) -> None:
        with self.lock:
            self.disruptions.append((at or time.time(), target, why))

    def disrupted(self, formation_id: str, start: float, end: float, exact: bool = False) -> bool:
        """Whether the formation was disrupted in [start, end] (`exact`: by an event aimed at
        it alone, not at every formation)."""
        targets = (formation_id,) if exact else (formation_id, "*")
        with self.lock:
            return any(
                start <= ts <= end and target in targets for ts, target, _ in self.disruptions
            )

    def note_op(self, formation_id: str, start: float, end: float) -> None:
        with self.lock:
            self.ops.append((formation_id, start, end))

    def in_op(self, formation_id: str, start: float, end: float) -> bool:
        with self.lock:
            return any(
                fid == formation_id and op_start <= end and start <= op_end
                for fid, op_start, op_end in self.ops
            )

    def fired(self) -> list[tuple[str, float]]:
        """Every fault that fired in the run so far: (actor, wall-clock time)."""
        if self.ledger is None or not self.ledger.exists():
            return []
        # Only whole lines: one being appended while we read ends without its newline.
        lines = self.ledger.read_text(encoding="utf-8").split("\n")[:-1]
        records = [json.loads(line) for line in lines if line]
        return [(r["actor"], r["ts"]) for r in records]

    def faults_fired(self, start: float, end: float) -> list[str]:
        """The actors whose fault fired in [start, end]."""
        return [actor for actor, ts in self.fired() if start <= ts <= end]


@dataclass
class SearchBook:
    """The searches created during the run (id -> keyword) and their active runs."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    known: dict[str, str] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)  # search id -> active run id

    def add(self, search_id: str, keyword: str) -> None:
        with self.lock:
            self.known[search_id] = keyword

    def known_now(self) -> dict[str, str]:
        with self.lock:
            return dict(self.known)

    def set_run(self, search_id: str, run_id: str | None) -> None:
        with self.lock:
            if run_id:
                self.runs[search_id] = run_id
            else:
                self.runs.pop(search_id, None)

    def run_ids(self) -> list[str]:
        with self.lock:
            return sorted(self.runs.values())


class Fsup:
    """The fsup under test: a `Server` that the driver kills and restarts on the same home.

    `up` is cleared before every planned kill, so a client that loses its connection can tell
    a planned outage from a crash; `epoch` counts starts (each start listens on a new port).
    """

    def __init__(self, home: Path, recorder: Recorder) -> None:
        self.home = home
        self.server = Server(home)
        self.recorder = recorder
        self.lock = threading.RLock()
        self.up = threading.Event()
        self.epoch = 0
        self.url = ""
        self.started_at = 0.0
        self.key_id = ""
        self.secret_key = ""
        self.token = ""
        self._log_offset = 0

    def start(self) -> None:
        with self.lock:
            self.server.start()
            self.url = self.server.url
            creds = json.loads((self.home / "server" / "credentials.json").read_text())
            self.key_id, self.secret_key = creds["key_id"], creds["secret_key"]
            bootstrap = httpx.get(f"{self.url}/api/v1/auth/bootstrap", trust_env=False)
            self.token = bootstrap.json()["token"]
            self.epoch += 1
            self.started_at = time.time()
            self.up.set()

    def kill(self) -> None:
        """SIGKILL fsup on purpose (its children must survive it)."""
        with self.lock:
            self.up.clear()
            self.server.kill()

    def stop(self) -> int | None:
        """A clean stop (SIGTERM), as an operator would end the run; its exit code."""
        with self.lock:
            self.up.clear()
            if self.server.proc is None:
                return None
            return self.server.stop()

    def exited(self) -> int | None:
        """The exit code if fsup ended although nobody stopped it, else None."""
        with self.lock:
            proc = self.server.proc
            if not self.up.is_set() or proc is None:
                return None
            return proc.poll()

    def reap(self) -> None:
        """Collect an fsup that died by itself, so that it can be started again."""
        with self.lock:
            self.up.clear()
            if self.server.proc is not None:
                self.server.stop()

    def current(self) -> tuple[int, str]:
        with self.lock:
            return self.epoch, self.url

    def log_text(self) -> str:
        path = self.home / "fsup-test.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_around(
        self,
        when: float,
        before: float = 5.0,
        after: float = 1.0,
        mentions: str | None = None,
        limit: int = 10,
    ) -> str:
        """Warning and error lines the server logged near `when` (only those naming
        `mentions`, when given), each traceback cut to its last line (the exception)."""
        picked: list[str] = []
        for line in self.log_text().splitlines():
            match = LOG_LINE.match(line)
            if match is None:
                continue  # an unstructured traceback: fsup-exit findings show the log's tail
            try:
                ts = datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
            if not when - before <= ts <= when + after or match.group(2) == "info":
                continue
            if mentions is not None and mentions not in line:
                continue
            head, _, trace = line.partition(' exc="')
            if trace:
                last = [part for part in trace.rstrip('"').split("\\n") if part.strip()]
                head += f" exc=...{last[-1].strip()[:300] if last else ''}"
            picked.append(head[:700])
        return "\n".join(picked[-limit:])


class Client:
    """One thread's HTTP client for fsup: signs /rpc, carries the bearer for /api/v1, and
    records every exchange (5xx included) with the `Recorder`."""

    def __init__(self, fsup: Fsup, stop: threading.Event) -> None:
        self.fsup = fsup
        self.recorder = fsup.recorder
        self.stop = stop
        self.http = httpx.Client(trust_env=False, timeout=REQUEST_TIMEOUT_S)

    def close(self) -> None:
        self.http.close()

    def rpc(self, method: str, path: str, body: bytes = b"") -> Exchange | None:
        def headers() -> dict[str, str]:
            return signed_headers(
                self.fsup.key_id, self.fsup.secret_key, method, path.encode(), body
            )

        return self._send("rpc", method, path, body, headers)

    def api(self, method: str, path: str, payload: Any = None) -> Exchange | None:
        body = b"" if payload is None else json.dumps(payload).encode()

        def headers() -> dict[str, str]:
            extra = {"Content-Type": "application/json"} if body else {}
            return {"Authorization": f"Bearer {self.fsup.token}", **extra}

        return self._send("api", method, f"/api/v1{path}", body, headers)

    def proxy(self, formation_id: str, rest: str) -> Exchange | None:
        return self._send("proxy", "GET", f"/api/{formation_id}{rest}", b"", dict)

    def _send(
        self, kind: str, method: str, path: str, body: bytes, headers: Any
    ) -> Exchange | None:
        """None when fsup is down on purpose (or the run is over); else the exchange."""
        while not self.fsup.up.wait(0.2):
            if self.stop.is_set():
                return None
        epoch, url = self.fsup.current()
        exchange = Exchange(kind, method, path, time.time(), 0.0, epoch)
        try:
            response = self.http.request(method, url + path, content=body, headers=headers())
        except httpx.HTTPError as exc:
            exchange.ended = time.time()
            exchange.text = repr(exc)
            self._no_answer(exchange)
            return None
        exchange.ended = time.time()
        exchange.status = response.status_code
        exchange.text = response.text[:600]
        try:
            exchange.body = response.json()
        except ValueError:
            exchange.body = None
        if isinstance(exchange.body, dict) and isinstance(exchange.body.get("error"), dict):
            exchange.code = exchange.body["error"].get("code")
        self.recorder.count(exchange)
        return exchange

    def _no_answer(self, exchange: Exchange) -> None:
        """A transport error is expected only when fsup went down (on purpose or by a crash
        that the monitor reports on its own); anything else is a defect of the server."""
        deadline = time.time() + 2.0
        while time.time() < deadline:
            if self.fsup.current()[0] != exchange.epoch or not self.fsup.up.is_set():
                return None
            if self.fsup.exited() is not None:
                return None
            time.sleep(0.1)
        self.recorder.count(exchange)
        self.recorder.find(
            "no-answer",
            f"fsup up but gave no answer: {exchange.describe()}",
            self.fsup.log_around(exchange.ended),
        )
        return None

"""Churn soak (issue 17, item 9): does fsup's memory stay flat while everything churns?

Run: .venv/bin/python bench/soak.py --minutes 10 [--formations 20] [--trace] [--seed 1]

Starts a real fsup (`serve`, as an operator runs it) in a temporary home with FORMATIONS small
formations (the test suite's `nasty.py` fixture in `serve` mode: `/health`, `/say` prints lines
to the formation's log, `/search` answers peer hits), then drives, in parallel:

- proxied GETs through `/api/{id}/...` (two keep-alive clients; one request in ten prints a
  line with a searchable word into the formation's log);
- event-stream sessions: a cookie from `POST /api/v1/session`, `GET /api/v1/events` read for
  0.2 to 3 s (now and then resumed with `Last-Event-ID`), closed, then logged out;
- searches: created with autostart, polled until complete, their results read, deleted;
- chaos: SIGKILL of a formation's process, operator restarts, updates (a new version) and
  rollbacks, one every 1.5 to 4.5 s (seeded).

Every few seconds it samples fsup's RSS and open fds (psutil, fsup's own process only) and
the bus's figures (`/api/v1/status`), and at the end prints the RSS growth after the first
minute (the warm-up: imports, first allocations, caches filling) with its slope, plus what was
driven. `--trace` runs fsup under tracemalloc and prints the allocation sites that grew most
between the end of the first minute and the end (tracemalloc slows fsup down: the figures of a
traced run are for finding a leak, not for the target). Without it, fsup still dumps its gc
object counts by type at both moments (SIGUSR1 to `soak_probe.py`, its wrapper of `serve`).
Samples and figures go to `bench/results/soak.json`. Target: under 2 MiB after the first minute.

Ports: fsup on 32730, formations in 32400-32699 (run.py's fsup range: do not run both at once).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import procs
import psutil
from fsup_runner import Fsup
from soak_probe import (
    DUMPS,
    INSIDE,
    REFERRERS,
    REPO,
    TRACE,
    gc_growth,
    rss_parts,
    show,
    trace_growth,
)

sys.path.insert(0, str(REPO))
from supervisor.cli.client import ApiError, parse_sse  # noqa: E402

NASTY = REPO / "tests" / "fixtures" / "nasty.py"
PORT, PORT_RANGE = 32730, "32400-32699"
RESULTS = REPO / "bench" / "results" / "soak.json"
WARMUP_S = 60.0
SAMPLE_S = 5.0
WORDS = [f"soakword{i}" for i in range(20)]
RESTART = {
    "policy": "always",
    "max_restarts": 10000,
    "window": 60,
    "backoff": {"initial": 0.05, "factor": 1, "max": 0.05, "jitter": 0},
}


class SoakFsup(Fsup):
    """The bench's `Fsup` runner with the nasty fixture as its formations, restart always,
    and `serve` run through `soak_probe.py`'s wrapper (its SIGUSR1 and SIGUSR2 dumps)."""

    def __init__(self, workdir: Path, n: int, trace_frames: int, referrers: str = "") -> None:
        self.trace_frames = trace_frames
        self.referrers = referrers
        self.dumps = workdir / "dumps"
        self.dumps.mkdir(parents=True)
        super().__init__(workdir, n, PORT, PORT_RANGE)

    def write_formation(self, folder: Path, name: str, version: str = "1.0.0", **env: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(NASTY, folder / "nasty.py")
        manifest = {
            "id": name,
            "version": version,
            "command": [sys.executable, "nasty.py", "serve"],
            "env": {procs.MARKER: procs.RUN_ID, **env},
            "health": {"http": "/health"},
            "search": {"path": "/search"},
            "restart": RESTART,
            "stop": {"timeout": 3},
        }
        (folder / "formation.yaml").write_text(json.dumps(manifest))
        return folder

    def env(self) -> dict[str, str]:
        extra = {DUMPS: str(self.dumps), REFERRERS: self.referrers}
        if self.trace_frames:
            extra[TRACE] = str(self.trace_frames)
        return {**super().env(), **extra}

    def _serve(self, *extra: str) -> None:
        self.close_client()
        argv = ["serve", "--port", str(self.port), "--port-range", self.port_range, *extra]
        self.proc = procs.launch(
            [sys.executable, str(Path(__file__).resolve().parent / "soak_probe.py"), *argv],
            env=self.env(),
            cwd=REPO,
            log=self.workdir / "fsup.out",
        )

    def wait_up(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.home / "server" / "credentials.json").exists():
                try:
                    if httpx.get(f"{self.url}/health", trust_env=False).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise TimeoutError("fsup did not answer /health")

    def stats(self, timeout: float = 5.0) -> dict[str, Any]:
        """fsup's memory figures from inside (`stats_now`), or {} if it does not answer."""
        path = self.dumps / "stats.json"
        path.unlink(missing_ok=True)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return json.loads(path.read_text())  # type: ignore[no-any-return]
            except (OSError, ValueError):
                time.sleep(0.02)
        return {}

    def dump(self, timeout: float = 120.0) -> int:
        """Ask fsup for a dump; return its index once written."""
        index = len(list(self.dumps.glob("gc-*.json")))
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not (self.dumps / f"done-{index}").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("fsup did not write its dump")
            time.sleep(0.1)
        return index


def pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return buffer.getvalue()


class Tally:
    """Counts of what was driven, by kind and outcome (thread-safe)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, kind: str, error: str | None = None) -> None:
        with self._lock:
            self.counts[kind] += 1
            if error:
                self.errors[f"{kind}: {error[:120]}"] += 1


def guarded(tally: Tally, kind: str, action: Callable[[], Any]) -> None:
    try:
        action()
        tally.add(kind)
    except (httpx.HTTPError, ApiError, OSError, TimeoutError) as exc:
        tally.add(f"{kind} failed", f"{type(exc).__name__}: {exc}")


# -- the drivers (threads; each loops until `stop`) ------------------------------------------


def proxied_gets(fsup: SoakFsup, stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=fsup.url, trust_env=False, timeout=30) as http:
        while not stop.is_set():
            name = rng.choice(fsup.names)
            if rng.random() < 0.1:
                path = f"/api/{name}/say?text=served+{rng.choice(WORDS)}+n{rng.randrange(10**6)}"
            else:
                path = f"/api/{name}/health"
            try:
                status = http.get(path).status_code
                tally.add("proxied GET", None if status == 200 else f"HTTP {status}")
            except httpx.HTTPError as exc:
                tally.add("proxied GET", type(exc).__name__)


def event_sessions(fsup: SoakFsup, stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    token = httpx.get(f"{fsup.url}/api/v1/auth/bootstrap", trust_env=False).json()["token"]
    last_id: str | None = None
    while not stop.is_set():

        def one_session() -> None:
            nonlocal last_id
            with httpx.Client(base_url=f"{fsup.url}/api/v1", trust_env=False, timeout=30) as http:
                opened = http.post("/session", headers={"Authorization": f"Bearer {token}"})
                opened.raise_for_status()
                headers = {"Accept": "text/event-stream"}
                if last_id and rng.random() < 0.3:
                    headers["Last-Event-ID"] = last_id
                until = time.monotonic() + rng.uniform(0.2, 3.0)
                with http.stream("GET", "/events", headers=headers, timeout=5) as answer:
                    answer.raise_for_status()
                    for event in parse_sse(answer.iter_lines()):
                        last_id = event.id or last_id
                        if time.monotonic() > until or stop.is_set():
                            break
                # A cookie's unsafe call carries fsup's CSRF header, as the dashboard's do.
                http.post("/session/logout", headers={"X-Fsup-Request": "1"}).raise_for_status()

        guarded(tally, "event-stream session", one_session)


def searches(fsup: SoakFsup, stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    token = httpx.get(f"{fsup.url}/api/v1/auth/bootstrap", trust_env=False).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(
        base_url=f"{fsup.url}/api/v1", trust_env=False, timeout=60, headers=auth
    ) as http:

        def one_search() -> None:
            body = {"keyword": rng.choice(WORDS), "mode": "full", "autostart": True}
            created = http.post("/searches", json=body)
            created.raise_for_status()
            search_id = created.json()["search"]["id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                detail = http.get(f"/searches/{search_id}").json()
                if detail["search"]["state"] in ("complete", "stopped", "error"):
                    break
                time.sleep(0.2)
            http.get(f"/searches/{search_id}/results", params={"limit": 50}).raise_for_status()
            http.delete(f"/searches/{search_id}").raise_for_status()

        while not stop.is_set():
            guarded(tally, "search", one_search)
            stop.wait(rng.uniform(3.0, 9.0))


def chaos(fsup: SoakFsup, stop: threading.Event, tally: Tally, seed: int) -> None:
    """SIGKILLs, restarts, updates and rollbacks of random formations."""
    rng = random.Random(seed)
    versions, earlier = Counter[str](), Counter[str]()  # versions made; ones to roll back to
    actions: list[tuple[str, int]] = [
        ("SIGKILL", 5),
        ("restart", 2),
        ("update", 2),
        ("rollback", 1),
    ]
    kinds = [kind for kind, weight in actions for _ in range(weight)]
    while not stop.wait(rng.uniform(1.5, 4.5)):
        name, kind = rng.choice(fsup.names), rng.choice(kinds)
        if kind == "rollback" and not earlier[name]:
            continue
        if kind == "update":
            versions[name] += 1
        earlier[name] += {"update": 1, "rollback": -1}.get(kind, 0)
        guarded(tally, kind, chaos_action(fsup, name, kind, versions[name]))


def chaos_action(fsup: SoakFsup, name: str, kind: str, version: int) -> Callable[[], Any]:
    if kind == "SIGKILL":
        return lambda: _kill(fsup, name)
    if kind == "update":
        return lambda: _update(fsup, name, version)
    return lambda: fsup.rpc.call("POST", f"/rpc/formations/{name}/{kind}")


def _kill(fsup: SoakFsup, name: str) -> None:
    pid = fsup.rpc.call("GET", f"/rpc/formations/{name}")
    pid = pid.get("formation", pid).get("pid")
    if not isinstance(pid, int):
        raise OSError(f"{name} has no pid now")
    os.kill(pid, signal.SIGKILL)


def _update(fsup: SoakFsup, name: str, number: int) -> None:
    folder = fsup.write_formation(
        fsup.workdir / "updates" / f"{number}" / name, name, f"1.{number}.0"
    )
    try:
        fsup.rpc.call(
            "PUT", f"/rpc/formations/{name}", pack(folder), {"Content-Type": "application/gzip"}
        )
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


# -- sampling and the report -----------------------------------------------------------------


def sample(fsup: SoakFsup, process: psutil.Process, began: float, http: httpx.Client) -> dict:
    point: dict[str, Any] = {
        "t": round(time.monotonic() - began, 1),
        "rss_mib": round(process.memory_info().rss / 2**20, 2),
        **rss_parts(process.pid),
        "fds": process.num_fds(),
        "threads": process.num_threads(),
    }
    try:
        status = http.get("/status").json()
        point["events"] = status.get("events")
    except (httpx.HTTPError, ValueError):
        pass
    point.update(fsup.stats())
    return point


def slope_mib_per_min(points: list[dict[str, Any]]) -> float:
    if len(points) < 2:
        return 0.0
    xs = [p["t"] / 60 for p in points]
    ys = [p["rss_mib"] for p in points]
    return statistics.linear_regression(xs, ys).slope


def soak(fsup: SoakFsup, args: argparse.Namespace) -> dict[str, Any]:
    stop, tally = threading.Event(), Tally()
    drivers = [proxied_gets, proxied_gets, event_sessions, event_sessions, searches, chaos]
    threads = [
        threading.Thread(target=drive, args=(fsup, stop, tally, args.seed * 100 + i), daemon=True)
        for i, drive in enumerate(drivers)
    ]
    assert fsup.proc is not None
    process = psutil.Process(fsup.proc.pid)
    token = httpx.get(f"{fsup.url}/api/v1/auth/bootstrap", trust_env=False).json()["token"]
    samples: list[dict[str, Any]] = []
    began = time.monotonic()
    for thread in threads:
        thread.start()
    first_dump = last_dump = None
    with httpx.Client(
        base_url=f"{fsup.url}/api/v1",
        trust_env=False,
        timeout=30,
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        try:
            end = began + args.minutes * 60
            while time.monotonic() < end:
                samples.append(sample(fsup, process, began, http))
                point = samples[-1]
                print(
                    f"  {point['t']:6.1f} s  RSS {point['rss_mib']:6.2f} MiB"
                    f" (anon {point.get('rssanon_mib')})  fds {point['fds']}"
                    f"  py {point.get('py_used_mib')} in {point.get('py_arenas')} arenas"
                    f"  heap {point.get('heap_used_mib')}+{point.get('heap_free_mib')} free"
                    f"  sqlite {point.get('sqlite_mib')}"
                    f"  history {(point.get('events') or {}).get('history')}"
                    f"  {sum(tally.counts.values())} calls",
                    flush=True,
                )
                # The dump allocates (a list of every object): taken a sample before the end
                # of the warm-up, so the baseline sample comes after it, not before.
                if first_dump is None and point["t"] >= WARMUP_S - 1.5 * SAMPLE_S:
                    first_dump = fsup.dump()
                time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - began - point["t"])))
        finally:
            stop.set()
            for thread in threads:
                thread.join(90)
        samples.append(sample(fsup, process, began, http))
    if first_dump is not None:
        last_dump = fsup.dump()
    return report(fsup, args, samples, tally, first_dump, last_dump)


def report(
    fsup: SoakFsup,
    args: argparse.Namespace,
    samples: list[dict[str, Any]],
    tally: Tally,
    first_dump: int | None,
    last_dump: int | None,
) -> dict[str, Any]:
    after = [p for p in samples if p["t"] >= WARMUP_S]
    base = after[0] if after else samples[0]
    growth = samples[-1]["rss_mib"] - base["rss_mib"]
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "minutes": args.minutes,
        "log_max_bytes": args.log_max_bytes,
        "formations": args.formations,
        "traced": bool(args.trace),
        "load_average": os.getloadavg(),
        "driven": dict(tally.counts),
        "errors": dict(tally.errors.most_common(20)),
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_after_warmup_mib": base["rss_mib"],
        "rss_end_mib": samples[-1]["rss_mib"],
        "rss_max_mib": max(p["rss_mib"] for p in samples),
        "growth_after_warmup_mib": round(growth, 2),
        "slope_after_warmup_mib_per_min": round(slope_mib_per_min(after), 3),
        "fds_after_warmup": base["fds"],
        "fds_end": samples[-1]["fds"],
        "inside_after_warmup": {k: base.get(k) for k in INSIDE},
        "inside_end": {k: samples[-1].get(k) for k in INSIDE},
        "samples": samples,
    }
    if first_dump is not None and last_dump is not None:
        result["gc_growth"] = gc_growth(fsup.dumps, first_dump, last_dump)
        if args.trace:
            result["trace_growth"] = trace_growth(fsup.dumps, first_dump, last_dump)
        chains = fsup.dumps / f"referrers-{last_dump}.txt"
        if chains.exists():
            result["referrers"] = chains.read_text().splitlines()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--formations", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--trace", type=int, nargs="?", const=8, default=0, help="tracemalloc frames (8)"
    )
    parser.add_argument(
        "--log-max-bytes",
        type=int,
        default=0,
        help="bound each formation's log at this size (1 backup): the searches then scan the "
        "same amount each minute once the logs are full, a steady load (default: fsup's own "
        "10 MB, which a 10-minute run never reaches, so each search scans more than the last)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep-log", type=Path, help="copy fsup's own log here at the end")
    parser.add_argument(
        "--referrers", default="", help="module.Type,... : who holds them, in each dump"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fsb-soak-"))
    fsup = SoakFsup(workdir, args.formations, args.trace, args.referrers)
    if args.log_max_bytes:
        (fsup.home / "server").mkdir(parents=True, exist_ok=True)
        (fsup.home / "server" / "config.yaml").write_text(
            f"limits: {{log_max_bytes: {args.log_max_bytes}, log_backups: 1}}\n"
        )
    try:
        fsup.start()
        fsup.wait_up()
        fsup.wait_settled(300)
        result = soak(fsup, args)
        if args.keep_log:
            shutil.copy(fsup.home / "server" / "logs" / "fsup.log", args.keep_log)
        result["fsup_log_lines"] = sum(
            len(path.read_bytes().splitlines())
            for path in (fsup.home / "server" / "logs").glob("fsup.log*")
        )
    finally:
        fsup.shutdown()
        left = procs.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    result["left_behind"] = left
    show(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"samples: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

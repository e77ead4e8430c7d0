"""fsup against supervisord, circus and PM2 on the same workload, in one run (issue 11).

Run from the repository root with fsup's venv:
    .venv/bin/python bench/run.py --quick     # N = 10, 3 repetitions, under 5 minutes
    .venv/bin/python bench/run.py             # N = 10 and 100, under 30 minutes
The first run installs the peers into bench/.peers/ (pip and npm; later runs reuse it).
Writes bench/results/latest.json (raw samples, machine, versions, date) and prints the
Markdown tables. Every process started carries a marker variable and is killed at the end,
even on failure or Ctrl-C. Ports used: 32000-32767 (the test suite claims 20000-31999).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import api_load
import fsup_extras
import peers
import procs
import report
import scenario
from fsup_runner import Fsup
from peer_runners import Circus, Floor, Pm2, Runner, Supervisord

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latest.json"
FSUP_DEPS = ("trio", "hypercorn", "quart", "quart-trio", "httpx", "psutil", "pyyaml")
NOT_MEASURED: list[str] = []
PROFILES = {
    "quick": {"ns": [10], "reps": 3, "kills": 5, "idle_s": 3.0, "settle_s": 1.0, "api_s": 2.0},
    "full": {
        "ns": [10, 100],
        "reps": 3,
        "kills": 20,
        "idle_s": 10.0,
        "settle_s": 2.0,
        "api_s": 5.0,
    },
}
# Below Linux's ephemeral range (32768-60999): the pollers open thousands of connections, and
# a client socket (or its TIME_WAIT) on a listening port-to-be makes that bind fail.
PORTS = {"floor": 32000, "circus": 32100, "supervisord": 32200, "pm2": 32300}
FSUP_PORT, FSUP_RANGE, CIRCUS_CTL, HELLO_PORT = 32700, "32400-32699", 32710, 32720


def say(text: str) -> None:
    print(text, flush=True)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def versions(found: dict[str, peers.Peer]) -> dict[str, str]:
    out = {}
    for dist in ("fsup", *FSUP_DEPS):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "?"
    for name, peer in found.items():
        out[name] = peer.version if peer.ok else f"not installed: {peer.error[:200]}"
    return out


def make_runner(name: str, workdir: Path, n: int, found: dict[str, peers.Peer]) -> Runner:
    if name == "floor":
        return Floor(workdir, n, PORTS["floor"])
    if name == "supervisord":
        return Supervisord(workdir, n, PORTS["supervisord"], found["supervisord"])
    if name == "circus":
        return Circus(workdir, n, PORTS["circus"], found["circus"], CIRCUS_CTL)
    if name == "pm2":
        return Pm2(workdir, n, PORTS["pm2"], found["pm2"])
    return Fsup(workdir, n, FSUP_PORT, FSUP_RANGE)


def run_one(
    name: str, n: int, profile: dict[str, Any], found: dict[str, peers.Peer], with_api: bool
) -> dict[str, Any]:
    workdirs: list[Path] = []

    def make(rep: int) -> Runner:
        workdir = Path(tempfile.mkdtemp(prefix=f"fsb-{name[:4]}-"))
        workdirs.append(workdir)
        return make_runner(name, workdir, n, found)

    def api(runner: Runner) -> dict[str, Any]:
        return {
            "api": api_load.measure(runner, runner.workdir, HELLO_PORT, profile["api_s"], say),
            "extras": fsup_extras.measure(runner, profile, say),
        }

    try:
        return scenario.measure(
            make,
            profile["reps"],
            profile["kills"],
            profile["idle_s"],
            profile["settle_s"],
            say,
            extra=api if (name == "fsup" and with_api) else None,
        )
    finally:
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 10 only, fewer repetitions")
    parser.add_argument("--only", nargs="+", choices=report.ORDER, help="runners to measure")
    args = parser.parse_args()
    profile = PROFILES["quick" if args.quick else "full"]
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    started = time.monotonic()
    log: list[str] = []
    doc: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "profile": profile,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_start": os.getloadavg(),
        },
        "not_measured": NOT_MEASURED,
        "results": {},
        "errors": {},
    }
    try:
        found = peers.ensure(log)
        for line in log:
            say(line)
        for name, peer in found.items():
            if not peer.ok:
                say(f"{name}: cannot be installed, going on without it: {peer.error[:300]}")
        doc["versions"] = versions(found)
        runners = [r for r in report.ORDER if not args.only or r in args.only]
        runners = [r for r in runners if r not in found or found[r].ok]
        for n in profile["ns"]:
            doc["results"][str(n)] = {}
            for name in runners:
                say(f"N={n} {name}")
                began = time.monotonic()
                try:
                    doc["results"][str(n)][name] = run_one(
                        name, n, profile, found, with_api=n == profile["ns"][0]
                    )
                except Exception as exc:  # noqa: BLE001 - one runner's failure is reported
                    traceback.print_exc()
                    doc["errors"][f"{n}/{name}"] = f"{type(exc).__name__}: {exc}"
                    say(f"N={n} {name}: failed: {exc}")
                say(f"N={n} {name}: {time.monotonic() - began:.0f} s")
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        doc["errors"]["interrupted"] = True
    finally:
        swept = procs.cleanup()
        if swept:
            say(f"swept {swept} leftover processes")
    doc["machine"]["load_avg_at_end"] = os.getloadavg()
    doc["elapsed_s"] = time.monotonic() - started
    tables = []
    for n, by_runner in doc["results"].items():
        tables.append(report.markdown(int(n), by_runner, profile["idle_s"]))
        api = by_runner.get("fsup", {}).get("api")
        if api:
            tables.append(report.api_markdown(api))
        extras = by_runner.get("fsup", {}).get("extras")
        if extras:
            tables.append(report.extras_markdown(extras))
    if NOT_MEASURED:
        tables.append("Not measured: " + "; ".join(NOT_MEASURED) + ".")
    doc["markdown"] = "\n\n".join(tables)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1, default=str))
    shutil.copyfile(RESULTS, RESULTS.with_name(f"{doc['mode']}.json"))  # the last of each mode
    say("")
    say(
        f"{doc['date']}, {doc['machine']['cores']} cores, Python {doc['machine']['python']}, "
        f"{doc['elapsed_s']:.0f} s; {RESULTS.relative_to(HERE.parent)}"
    )
    say(doc["markdown"])
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

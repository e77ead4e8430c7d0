"""fsup's HTTP front end and weight alone, for iterating on them (issue 11, part 2).

`run.py` measures these too, among everything else; this runs only what the HTTP edge
changes, in about a minute, with the same code (`api_load`, `Fsup`, `procs`):

    .venv/bin/python bench/front_end.py                 # N = 10: launch to /health, API figures
    .venv/bin/python bench/front_end.py --n 100 --no-api   # RSS with 100 formations

Figures: seconds from launching `fsup serve` (empty home) until `GET /health` answers; the
supervisor's RSS after N formations are running and it has settled; and the API figures of
`api_load` (signed `/rpc/formations` against a bare Hypercorn hello, the proxy against the
service hit directly), as ratios measured in the same run. Uses run.py's ports.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import api_load
import procs
import report
import workload
from fsup_runner import Fsup
from run import FSUP_PORT, FSUP_RANGE, HELLO_PORT


def launch_to_health(workdir: Path) -> float:
    """Seconds from launching `fsup serve` on an empty home until `/health` answers."""
    fsup = Fsup(workdir, 0, FSUP_PORT, FSUP_RANGE)
    try:
        began = time.perf_counter()
        fsup.restore()  # a plain `serve`
        while time.perf_counter() - began < 30:
            if workload.get(FSUP_PORT, "/health") is not None:
                return time.perf_counter() - began
            time.sleep(0.005)
        raise TimeoutError("fsup did not answer /health within 30 s")
    finally:
        fsup.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="formations (default 10)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per API figure")
    parser.add_argument("--settle", type=float, default=2.0, help="before reading RSS")
    parser.add_argument("--no-api", action="store_true", help="launch and RSS only")
    args = parser.parse_args()
    out: dict[str, Any] = {"n": args.n}
    workdir = Path(tempfile.mkdtemp(prefix="fsb-front-"))
    try:
        out["launch_to_health_s"] = []
        for i in range(3):
            (workdir / f"launch{i}").mkdir()
            out["launch_to_health_s"].append(launch_to_health(workdir / f"launch{i}"))
        print(f"launch to /health: {out['launch_to_health_s']}", flush=True)
        (workdir / "run").mkdir()
        fsup = Fsup(workdir / "run", args.n, FSUP_PORT, FSUP_RANGE)
        try:
            workload.reset_ports(fsup.portdir)
            began = time.perf_counter()
            fsup.start()
            workload.wait_all(fsup.portdir, fsup.names, began, timeout=300)
            fsup.wait_settled(timeout=300)
            time.sleep(args.settle)
            own, _ = procs.split_tree(fsup.supervisor_pids())
            out["rss_mib"] = procs.rss_mib(own)
            print(f"N={args.n}: supervisor RSS {out['rss_mib']:.1f} MiB", flush=True)
            if not args.no_api:
                out["api"] = api_load.measure(
                    fsup, workdir / "run", HELLO_PORT, args.seconds, print
                )
                print(report.api_markdown(out["api"]))
        finally:
            fsup.shutdown()
    finally:
        procs.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

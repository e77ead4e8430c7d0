"""A seeded chaos run against a real fsup (issue 8, item 9).

Four formations (one of them `stubborn`: it ignores SIGTERM and has two grandchildren, one of
which left its process group) and a few searches run under an fsup started with
`FSUP_TEST_FAULTS=1`. For `--chaos-minutes` the driver SIGKILLs main processes, grandchildren
and fsup itself (restarted on the same home, it must adopt the children) and injects actor
faults, while an operator, readers, proxy users and a search user work. The checker holds fsup
to its promises the whole time; the summary at the end says what happened, with the seed.
"""

from __future__ import annotations

import faulthandler
import random
import sys
import threading
import time
from pathlib import Path

import pytest
from chaos_checker import Checker, Fleet, FormationModel
from chaos_clients import Operator, ProxyUser, Reader, SearchUser, World, guarded
from chaos_driver import Driver
from chaos_report import summary
from chaos_world import ChaosSettings, Client, Fsup, Recorder, SearchBook
from helpers import formation_processes, nasty_bundle

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

BOUND_S = 15.0
SETUP_BOUND_S = 60.0
HANG_MARGIN_S = 600.0  # setup, the final settling, a clean stop: never near this
FORMATIONS = (("alpha", "serve"), ("bravo", "serve"), ("charlie", "stubborn"), ("delta", "serve"))
# Kills are frequent on purpose: the policy must keep restarting (never give up as `crashed`)
# and quickly, so that the bound measures fsup and not a backoff chosen for production.
RESTART = {
    "policy": "always",
    "backoff": {"initial": 0.2, "factor": 1.5, "max": 2, "jitter": 0.1},
    "reset_after": 5,
    "max_restarts": 10000,
    "window": 60,
}
SEARCHES = (("serving", "full"), ("shared doc", "live"))


def deploy(fsup: Fsup) -> list[FormationModel]:
    models = []
    for fid, mode in FORMATIONS:
        extra = {"search": {"path": "/search"}} if mode == "serve" else {}
        done = fsup.server.rpc.deploy(
            nasty_bundle(
                fid,
                mode,
                restart=RESTART,
                health={"http": "/health", "interval": 0.2, "timeout": 10},
                **extra,
            )
        )
        assert done["status"] == "running", done
        models.append(FormationModel(fid, mode, done["version"], pending_since=time.time()))
    return models


def create_searches(world: World) -> None:
    client = Client(world.fsup, world.stop)
    try:
        for keyword, mode in SEARCHES:
            answer = client.api(
                "POST", "/searches", {"keyword": keyword, "autostart": True, "mode": mode}
            )
            assert answer is not None and answer.status == 201, answer
            search = answer.body["search"]
            world.searches.add(search["id"], search["keyword"])
            world.searches.set_run(search["id"], search.get("active_run_id"))
    finally:
        client.close()


def settle(checker: Checker, fleet: Fleet, within: float) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        checker.watch_fsup()
        checker.sample()
        if fleet.all_settled():
            return True
        time.sleep(0.3)
    return False


def test_seeded_chaos(
    home: Path,
    chaos_settings: ChaosSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed, seconds = chaos_settings.seed, chaos_settings.seconds
    with capsys.disabled():
        print(f"\nchaos: seed {seed}, {seconds:.0f}s (replay with --chaos-seed {seed})", flush=True)
    monkeypatch.setenv("FSUP_TEST_FAULTS", "1")
    ledger = home.parent / f"{home.name}-faults.jsonl"
    monkeypatch.setenv("FSUP_TEST_FAULTS_LEDGER", str(ledger))
    # pytest's hang detector (faulthandler_timeout) would dump every thread mid-run: re-arm it
    # for the run's own length (pytest cancels it when the test ends).
    faulthandler.dump_traceback_later(
        seconds + HANG_MARGIN_S, exit=False, file=sys.__stderr__ or sys.stderr
    )
    rng = random.Random(seed)
    recorder = Recorder(ledger=ledger)
    fsup = Fsup(home, recorder)
    stop, operator_stop = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    fleet = Fleet(recorder, [])
    checker: Checker | None = None
    report = "chaos: the run did not get past its setup"
    passed = False
    try:
        fsup.start()
        fleet = Fleet(recorder, deploy(fsup))
        world = World(fsup, recorder, fleet, SearchBook(), BOUND_S, stop)
        create_searches(world)
        checker = Checker(fsup, fleet, world.searches, BOUND_S, stop)
        assert settle(checker, fleet, SETUP_BOUND_S), (
            f"formations never settled after deploy:\n{fsup.log_text()[-3000:]}"
        )
        recorder.convergence.clear()

        operator = Operator(world, random.Random(rng.random()), operator_stop)
        bodies = {
            "checker": checker.run,
            "operator": operator.run,
            "reader": Reader(world, random.Random(rng.random())).run,
            "proxy-1": ProxyUser(world, random.Random(rng.random())).run,
            "proxy-2": ProxyUser(world, random.Random(rng.random())).run,
            "searcher": SearchUser(world, random.Random(rng.random())).run,
        }
        for name, body in bodies.items():
            thread = threading.Thread(target=guarded(recorder, name, body), name=name, daemon=True)
            threads.append(thread)
            thread.start()
        started = time.time()
        Driver(world, random.Random(rng.random())).run(until=started + seconds)
        seconds = time.time() - started

        operator_stop.set()
        threads[list(bodies).index("operator")].join(timeout=120)
        if not settle(checker, fleet, BOUND_S + 5):
            recorder.notes["formations unsettled at the end"] += 1
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        checker.final_sample()  # converged, one main, no orphan, nothing lost
    finally:
        stop.set()
        operator_stop.set()
        for thread in threads:
            thread.join(timeout=60)
        if checker is not None:
            checker.close()
        finish(fsup, recorder, home)
        report, passed = summary(
            recorder, fleet, BOUND_S, seed, seconds, fsup.epoch, fsup.log_around
        )
        with capsys.disabled():
            print(report, flush=True)
    assert passed, report


def finish(fsup: Fsup, recorder: Recorder, home: Path) -> None:
    """Stop fsup cleanly (it must exit 0 and stop every formation), then make sure that no
    process of the run outlives it, whatever happened."""
    if fsup.server.proc is not None:
        try:
            code = fsup.stop()
        except Exception as exc:  # noqa: BLE001 - a wedged fsup: kill it, report it
            code = None
            recorder.find("fsup-stop", f"fsup did not stop on SIGTERM: {exc!r}")
            fsup.server.proc.kill()
            fsup.server.proc.wait(10)
        if code not in (0, None):
            recorder.find(
                "fsup-stop",
                f"a clean stop of fsup exited with {code}",
                "\n".join(fsup.log_text().splitlines()[-20:]),
            )
    left = formation_processes(home)
    if left:
        recorder.find(
            "left-after-stop",
            "processes left after a clean stop of fsup: "
            + ", ".join(f"{p.pid} ({' '.join(p.cmdline())[:60]})" for p in left),
        )
    for proc in left:
        try:
            proc.kill()
        except Exception:  # noqa: BLE001, S110 - already gone
            pass

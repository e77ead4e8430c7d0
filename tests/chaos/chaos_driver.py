"""The chaos driver: SIGKILLs main processes, grandchildren and fsup itself, and arms actor
faults, on a schedule drawn from the run's seed.

A targeted disruption only hits a formation that has settled since its last one (or failed to
within the bound, which is already reported), so each convergence time measures one recovery,
and a formation kept permanently broken by the schedule cannot hide a defect. fsup is only
killed when every formation has settled.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter

import httpx
import psutil
from chaos_clients import World
from chaos_procs import mains, scan, tree
from chaos_world import Client

ACTIONS = ("kill_main", "kill_grandchild", "kill_fsup", "inject_fault")
WEIGHTS = (30, 15, 15, 40)
FAULT_TARGETS = ("formation", "fleet", "searches", "search-run")
FAULT_WEIGHTS = (45, 20, 20, 15)
# Supervisors restart a child at most 5 times in 10 s (actors/supervision.py `Intensity`,
# supervisor/server.py `ROOT_INTENSITY`); the driver stays below that, with margin.
FAULT_BUDGET = 4
BUDGET_S = 15.0


class Driver:
    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.client = Client(world.fsup, world.stop)
        self.done: Counter[str] = Counter()
        self.armed: list[tuple[float, str, int]] = []  # (when, actor, count)

    def run(self, until: float) -> None:
        """Act until `until`. Past 40% of the run, an action that never happened yet is taken
        first, so that even the short CI run has every kind of kill."""
        start = time.time()
        try:
            while time.time() < until and not self.world.stop.is_set():
                time.sleep(self.rng.uniform(0.8, 2.5))
                action = self.rng.choices(ACTIONS, WEIGHTS)[0]
                missing = [a for a in ACTIONS if not self.done[a]]
                if missing and time.time() - start > 0.4 * (until - start):
                    action = missing[0]
                if not self.world.fsup.up.is_set() or not getattr(self, action)():
                    self.world.recorder.notes[f"{action} skipped (nothing settled)"] += 1
                else:
                    self.done[action] += 1
        finally:
            self.client.close()

    def _settled(self, within: float = 5.0) -> bool:
        """Wait a little for every formation to settle (fsup is only killed when they are)."""
        deadline = time.time() + within
        while not self.world.fleet.all_calm():
            if time.time() > deadline or self.world.stop.is_set():
                return False
            time.sleep(0.1)
        return True

    def _kill(self, fid: str, pid: int) -> bool:
        """SIGKILL `pid` if it is still a process of formation `fid` (never a recycled pid)."""
        try:
            proc = psutil.Process(pid)
            if proc.environ().get("FORMATION_ID") != fid:
                return False
            proc.send_signal(signal.SIGKILL)
        except (psutil.Error, OSError):
            return False
        return True

    def kill_main(self) -> bool:
        calm = self.world.fleet.calm()
        if not calm:
            return False
        fid = self.rng.choice(calm)
        found = mains(scan(self.world.fsup.home).get(fid, []))
        if len(found) != 1:
            return False
        self.world.fleet.disrupt(fid, "kill child")
        if self._kill(fid, found[0].pid):
            self.world.recorder.kills["child"] += 1
        return True

    def kill_grandchild(self) -> bool:
        procs = scan(self.world.fsup.home)
        candidates = []
        for fid in self.world.fleet.calm():
            top = mains(procs.get(fid, []))
            if len(top) == 1:
                below = tree(procs[fid], top[0].pid) - {top[0].pid}
                candidates += [(fid, pid) for pid in sorted(below)]
        if not candidates:
            return False
        fid, pid = self.rng.choice(candidates)
        self.world.fleet.disrupt(fid, "kill grandchild")
        if self._kill(fid, pid):
            self.world.recorder.kills["grandchild"] += 1
        return True

    def kill_fsup(self) -> bool:
        """SIGKILL fsup; its children must outlive it and be adopted by the next fsup."""
        world = self.world
        if not self._settled():
            return False
        scanned = time.time()
        procs = scan(world.fsup.home)
        alive = {
            fid: m[0].pid for fid in world.fleet.ids() if len(m := mains(procs.get(fid, []))) == 1
        }
        with world.fsup.lock:
            world.fleet.disrupt("*", "kill fsup")
            world.fsup.kill()
            world.recorder.kills["fsup"] += 1
            time.sleep(self.rng.uniform(0.1, 2.0))
            # A formation an operator began to stop or restart meanwhile may lose its
            # process to that request, not to the kill.
            gone = [
                f"{fid} pid {pid}"
                for fid, pid in sorted(alive.items())
                if not _alive(pid)
                and not world.recorder.disrupted(fid, scanned, time.time(), exact=True)
            ]
            if gone:
                world.recorder.find("children-died", f"children died with fsup: {gone}")
            try:
                world.fsup.start()
            except (AssertionError, httpx.HTTPError, OSError) as exc:
                world.recorder.find("fsup-start", f"fsup did not start again: {exc}")
                world.stop.set()
                return True
            world.fleet.disrupt("*", "fsup restarted")
        return True

    def inject_fault(self) -> bool:
        """Arm 1-3 faults in one actor, within its supervisor's restart intensity: past that
        limit the contract lets a supervisor give up (or pause), which is not a defect."""
        world = self.world
        kind = self.rng.choices(FAULT_TARGETS, FAULT_WEIGHTS)[0]
        runs = world.searches.run_ids()
        if kind == "search-run" and not runs:
            kind = "searches"
        target = ""  # the formations the fault may disturb
        if kind == "formation":
            calm = world.fleet.calm(running=False)
            if not calm:
                return False
            target = self.rng.choice(calm)
            actor = f"formation:{target}"
        elif kind == "fleet":
            if not self._settled():
                return False
            actor, target = "fleet", "*"
        elif kind == "search-run":
            actor = f"search-run:{self.rng.choice(runs)}"
        else:
            actor = "searches"
        count = self.rng.choice((1, 1, 1, 2, 3))
        now = time.time()
        recent = sum(n for ts, name, n in self.armed if name == actor and ts > now - BUDGET_S)
        if recent + count > FAULT_BUDGET:
            return False
        if target:
            world.fleet.disrupt(target, f"fault {kind}")
        answer = self.client.rpc(
            "POST", "/rpc/server/faults", json.dumps({"actor": actor, "count": count}).encode()
        )
        if answer is None:
            return True  # fsup went down meanwhile
        if answer.status != 200:
            world.recorder.find("fault-endpoint", f"arming {actor}: {answer.describe()}")
            return True
        self.armed.append((now, actor, count))
        world.recorder.kills[f"fault {kind}"] += 1
        return True


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False

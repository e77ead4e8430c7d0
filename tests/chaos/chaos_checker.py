"""The continuous checks of the chaos run: convergence, one main process, no orphan, nothing
lost, and fsup never exiting on its own.

Every disruption (a kill, an injected fault, an operator's request) is registered against the
formations it may disturb before it happens. From then on the formation must be seen in its
desired state within `bound` seconds; the time it takes is its convergence time. A formation
that goes wrong with no disruption registered starts its clock at that moment, so nothing that
breaks by itself can escape the bound either.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from chaos_procs import judge, mains, scan
from chaos_world import Client, Exchange, Fsup, Recorder, SearchBook

SAMPLE_S = 0.5
LOST_EVERY_S = 2.0


@dataclass
class FormationModel:
    """What the test knows a formation should be, and how far it is from it."""

    fid: str
    mode: str
    version: str
    desired: str = "running"
    busy: bool = False  # an operator request is in flight: the desired state is in doubt
    pending_since: float | None = None  # last disruption not yet followed by a good sample
    why: str = "deploy"
    flagged: bool = False
    problems: list[str] = field(default_factory=list)
    history: list[tuple[float, str]] = field(default_factory=list)


class Fleet:
    """The formation models, shared by the driver, the operator and the checker."""

    def __init__(self, recorder: Recorder, models: list[FormationModel]) -> None:
        self.recorder = recorder
        self.lock = threading.Lock()
        self.models = {m.fid: m for m in models}
        for model in models:
            model.history.append((time.time(), model.desired))

    def ids(self) -> list[str]:
        return sorted(self.models)

    def disrupt(self, target: str, why: str) -> None:
        """Register a disruption of one formation, or of all of them (`*`)."""
        now = time.time()
        self.recorder.disrupt(target, why, now)
        with self.lock:
            for model in self.models.values():
                if target in ("*", model.fid):
                    model.pending_since, model.why, model.flagged = now, why, False

    def calm(self, running: bool = True) -> list[str]:
        """Formations settled since their last disruption (the driver's targets)."""
        with self.lock:
            return sorted(
                m.fid
                for m in self.models.values()
                if not m.busy
                and (m.pending_since is None or m.flagged)
                and (not running or m.desired == "running")
            )

    def all_calm(self) -> bool:
        """Every formation settled, or already reported for not settling in time."""
        with self.lock:
            return all(m.pending_since is None or m.flagged for m in self.models.values())

    def all_settled(self) -> bool:
        with self.lock:
            return all(m.pending_since is None for m in self.models.values())

    def begin_op(self, fid: str, op: str) -> None:
        with self.lock:
            self.models[fid].busy = True
        self.disrupt(fid, f"{op} requested")

    def end_op(self, fid: str, op: str, desired: str) -> None:
        with self.lock:
            model = self.models[fid]
            model.busy, model.desired = False, desired
            model.history.append((time.time(), desired))
        self.disrupt(fid, f"{op} answered")

    def desired_at(self, fid: str, when: float) -> str:
        with self.lock:
            model = self.models[fid]
            state = model.history[0][1]
            for ts, desired in model.history:
                if ts <= when:
                    state = desired
            return state


class Checker:
    """The checker thread: one sample every `SAMPLE_S` while fsup is up."""

    def __init__(
        self, fsup: Fsup, fleet: Fleet, searches: SearchBook, bound: float, stop: threading.Event
    ) -> None:
        self.fsup = fsup
        self.fleet = fleet
        self.recorder = fsup.recorder
        self.searches = searches
        self.bound = bound
        self.stop = stop
        self.client = Client(fsup, stop)
        self._last_lost_check = 0.0
        self._doubles: dict[str, frozenset[int]] = {}

    def run(self) -> None:
        try:
            while not self.stop.wait(SAMPLE_S):
                self.watch_fsup()
                self.sample()
        except Exception as exc:  # noqa: BLE001 - a harness bug must fail the run, not hide
            self.recorder.find("harness", f"checker failed: {exc!r}")
            raise

    def close(self) -> None:
        self.client.close()

    def watch_fsup(self) -> None:
        """fsup must never exit unless the driver killed it: report it, then bring it back."""
        with self.fsup.lock:
            code = self.fsup.exited()
            if code is None:
                return
            died = time.time()
            tail = "\n".join(self.fsup.log_text().splitlines()[-30:])
            self.recorder.find("fsup-exit", f"fsup exited by itself with code {code}", tail)
            self.recorder.notes["fsup restarts after a crash"] += 1
            self.fleet.disrupt("*", "fsup crashed")
            self.fsup.reap()
            try:
                self.fsup.start()
            except (AssertionError, httpx.HTTPError, OSError) as exc:
                self.recorder.find("fsup-start", f"fsup did not start again: {exc}")
                self.stop.set()
                return
            self.recorder.notes["seconds fsup was down after crashes"] += int(time.time() - died)
            self.fleet.disrupt("*", "fsup restarted after a crash")

    def final_sample(self) -> bool:
        """The last look, once every thread has stopped: judge every formation, and check for
        lost work whenever the previous check ran (`sample` does that every `LOST_EVERY_S`)."""
        self._last_lost_check = 0.0
        return self.sample()

    def sample(self) -> bool:
        """Judge every formation once; False when fsup could not be asked."""
        epoch = self.fsup.current()[0]
        started = time.time()
        listed = self.client.rpc("GET", "/rpc/formations")
        if listed is None or listed.status != 200 or not isinstance(listed.body, dict):
            return False
        snaps = {f["id"]: f for f in listed.body.get("formations", [])}
        procs = scan(self.fsup.home)
        if self.fsup.current()[0] != epoch:
            return False
        self.check_doubles(procs)
        if started - self._last_lost_check >= LOST_EVERY_S:
            self._last_lost_check = started
            self.check_lost(snaps, listed)
        all_good = True
        for fid in self.fleet.ids():
            with self.fleet.lock:
                model = self.fleet.models[fid]
                busy, desired = model.busy, model.desired
            if busy:
                all_good = False
                continue
            problems = judge(desired, snaps.get(fid), procs.get(fid, []))
            if not problems and desired == "running":
                problems = self.check_proxy(fid, snaps[fid]["pid"])
            self.observe(fid, problems, started)
            all_good = all_good and not problems
        return all_good

    def check_proxy(self, fid: str, pid: int) -> list[str]:
        """The proxy must reach the very process fsup reports."""
        answer = self.client.proxy(fid, "/whoami")
        if answer is None:
            return ["proxy not asked (fsup down)"]
        if answer.status != 200 or not isinstance(answer.body, dict):
            return [f"proxy answered {answer.status} {answer.code or ''}"]
        if answer.body.get("pid") != pid:
            return [f"proxy reached pid {answer.body.get('pid')}, fsup reports {pid}"]
        return []

    def observe(self, fid: str, problems: list[str], sampled: float) -> None:
        now = time.time()
        with self.fleet.lock:
            model = self.fleet.models[fid]
            if model.busy:
                return
            model.problems = problems
            if not problems:
                if model.pending_since is not None and model.pending_since <= sampled:
                    took = sampled - model.pending_since
                    self.recorder.convergence.append((model.why.split(":")[0], took))
                    if model.flagged:
                        self.recorder.notes["late convergences"] += 1
                    model.pending_since = None
                return
            if model.pending_since is None:
                model.pending_since, model.why = sampled, f"spontaneous: {problems[0][:80]}"
                # Not a registered disruption: a 5xx it causes stays unexplained.
                shape = re.sub(r"[0-9]+", "N", problems[0])[:90]
                self.recorder.notes[f"spontaneous departure: {shape}"] += 1
                return
            if now - model.pending_since <= self.bound or model.flagged:
                return
            model.flagged = True
            since, why, desired = model.pending_since, model.why, model.desired
        with self.recorder.lock:
            timeline = [
                f"{ts - since:+.2f}s {why}"
                for ts, target, why in self.recorder.disruptions
                if target in (fid, "*") and since - self.bound <= ts <= now
            ]
        self.recorder.find(
            "not-converged",
            f"{fid} not {desired} {self.bound:g}s after '{why}': {'; '.join(problems)}",
            f"disruptions of {fid} (time from the last one): {', '.join(timeline)}\n"
            + self.fsup.log_around(now, before=now - since + self.bound, mentions=fid),
        )

    def check_doubles(self, procs: dict[str, list[Any]]) -> None:
        """Two main processes of one formation, seen twice in a row, is a double start."""
        for fid, found in procs.items():
            pids = frozenset(p.pid for p in mains(found))
            before = self._doubles.get(fid, frozenset())
            self._doubles[fid] = pids
            both = pids & before
            if len(pids) > 1 and len(both) > 1:
                self.recorder.find(
                    "two-mains",
                    f"{fid} has main processes {sorted(both)} at once for {SAMPLE_S:g}s or more",
                    self.fsup.log_around(time.time(), mentions=fid),
                )
                self._doubles[fid] = frozenset()  # report each episode once

    def check_lost(self, snaps: dict[str, dict[str, Any]], listed: Exchange) -> None:
        """Every formation and search listed before is still listed, unchanged."""
        up_for = time.time() - self.fsup.started_at
        for fid in self.fleet.ids():
            model = self.fleet.models[fid]
            snap = snaps.get(fid)
            if snap is None:
                self.recorder.find(
                    "lost",
                    f"formation {fid} missing from GET /rpc/formations (fsup up for {up_for:.1f}s)",
                    self.fsup.log_around(time.time(), before=up_for + 1),
                )
            elif snap.get("version") != model.version or model.version not in (
                snap.get("versions") or []
            ):
                fired = [
                    a
                    for a in self.recorder.faults_fired(listed.started, listed.ended)
                    if a == f"formation:{fid}"
                ]
                why = (
                    f"an injected fault fired in formation:{fid} during the list"
                    if fired
                    else "no fault fired in its actor during the list"
                )
                self.recorder.find(
                    "lost",
                    f"formation {fid} listed as {snap} by GET "
                    f"/rpc/formations, expected version {model.version} ({why})",
                )
        searches = self.client.api("GET", "/searches")
        if searches is None or searches.status != 200 or not isinstance(searches.body, dict):
            return
        now_listed = {s["id"]: s.get("keyword") for s in searches.body.get("searches", [])}
        known = self.searches.known_now()
        for sid, keyword in known.items():
            if sid not in now_listed:
                self.recorder.find(
                    "lost",
                    f"search {sid} ({keyword!r}) missing from "
                    f"GET /api/v1/searches (fsup up for {up_for:.1f}s)",
                )
            elif now_listed[sid] != keyword:
                self.recorder.find(
                    "lost", f"search {sid}: keyword {now_listed[sid]!r}, expected {keyword!r}"
                )

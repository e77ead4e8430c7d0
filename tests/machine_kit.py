"""A pretend driver for `FormationMachine`: it carries out effects on paper, so that tests can
feed events, read effects and check the promises after every step. No trio, no processes."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.formation.machine import FormationMachine
from actors.formation.machine import effects as fx
from actors.formation.machine.lifecycle import ALLOWED, Desired, State
from actors.formation.machine.messages import (
    BeginJob,
    Boot,
    Exited,
    GateFailed,
    GatePassed,
    JobStaged,
    JobTarget,
    Requested,
    Shutdown,
    Spawned,
    SpawnFailed,
    Start,
    Stop,
    StopFinished,
)
from supervisor.core.manifest import FormationSpec, parse_manifest

MANIFEST = """
id: web
version: {version}
command: ["python3", "app.py"]
health: {{http: /health, interval: 0.5, timeout: 5}}
restart:
  policy: {policy}
  backoff: {{initial: 1, factor: 2, max: 8, jitter: 0}}
  reset_after: 30
  max_restarts: 3
  window: 100
stop: {{timeout: 3}}
"""


def spec(version: str = "1.0.0", policy: str = "on-failure") -> FormationSpec:
    return parse_manifest(MANIFEST.format(version=version, policy=policy).encode())


def update_target(version: str = "2.0.0") -> JobTarget:
    return JobTarget("update", spec(version), Path(f"/v/{version}"), b"manifest", Path("/staged"))


def rollback_target() -> JobTarget:
    return JobTarget("rollback", spec("0.9.0"), Path("/v/0.9.0"), None, None)


@dataclass
class Paper:
    """What the driver would have done: processes, routes, ports, the store, the replies."""

    machine: FormationMachine
    now: float = 0.0
    rids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    pids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))
    requests: dict[int, Any] = field(default_factory=dict)
    answers: dict[int, fx.Answer] = field(default_factory=dict)
    live: set[int] = field(default_factory=set)
    watched: dict[int, fx.Watch] = field(default_factory=dict)  # by pid
    stops: dict[int, int | None] = field(default_factory=dict)  # stop gen -> pid
    timers: dict[int, float] = field(default_factory=dict)  # gen -> due
    preparing: dict[int, fx.PrepareJob] = field(default_factory=dict)
    retiring: dict[int, fx.RetireOld] = field(default_factory=dict)
    cleaning: dict[int, fx.CleanUpJob] = field(default_factory=dict)
    staged: dict[int, tuple[int, int]] = field(default_factory=dict)  # job -> (pid, port)
    ports: set[int] = field(default_factory=lambda: {8001})
    next_port: itertools.count[int] = field(default_factory=lambda: itertools.count(9001))
    route: int | None = None
    desired: str = "running"
    ended: bool = False
    transitions: list[tuple[str, str, str]] = field(default_factory=list)
    spawn_fails: bool = False
    last: list[fx.Effect] = field(default_factory=list)
    # What the store says runs (the pid and version an fsup restarted after a crash would
    # adopt), and the version each process was started with (its FORMATION_VERSION).
    stored_pid: int | None = None
    stored_version: str = "1.0.0"
    versions: dict[int, str] = field(default_factory=dict)
    exit_asked: bool = False  # a shutdown or delete was sent: no spawn may follow

    def feed(self, event: Any) -> list[fx.Effect]:
        effects = self.machine.handle(event, self.now)
        done: list[fx.Effect] = []
        for effect in effects:
            done.append(effect)
            outcome = self.apply(effect)
            if outcome is not None:
                done.extend(self.feed(outcome))
        self.last = done
        return done

    def request(self, request: Any) -> int:
        rid = next(self.rids)
        self.requests[rid] = request
        self.exit_asked |= isinstance(request, Shutdown)
        if isinstance(request, JobTarget):
            self.feed(BeginJob(rid, request))
        else:
            self.feed(Requested(rid, request))
        return rid

    def apply(self, effect: fx.Effect) -> Any:  # noqa: C901 - one case per effect
        m = self.machine
        match effect:
            case fx.Answer(rid=rid):
                assert rid not in self.answers, f"request {rid} answered twice"
                self.answers[rid] = effect
            case fx.Publish(type="formation_state_changed", data=data):
                old, new = State(data["from"]), State(data["to"])
                assert new in ALLOWED[old], f"{old} -> {new}"
                self.transitions.append((old.value, new.value, data["reason"]))
            case fx.Spawn(gen=gen, spec=spawned):
                assert not self.exit_asked, "a spawn after a shutdown or delete"
                if self.spawn_fails:
                    return SpawnFailed(gen, "cannot spawn", None)
                pid = next(self.pids)
                self.live.add(pid)
                self.versions[pid] = spawned.version
                return Spawned(gen, pid, self.now)
            case fx.Watch(pid=pid):
                assert pid in self.live, f"watching {pid}, which is not alive"
                self.watched[pid] = effect
            case fx.Unwatch(pid=pid):
                self.watched.pop(pid, None)
            case fx.StopProcess(gen=gen, pid=pid):
                self.stops[gen] = pid
            case fx.StartTimer(gen=gen, delay=delay):
                self.timers[gen] = self.now + delay
            case fx.CancelTimer(gen=gen):
                self.timers.pop(gen, None)
            case fx.PersistDesired(desired=desired):
                self.desired = desired
            case fx.PersistProcess(pid=pid):
                self.stored_pid = pid
            case fx.PersistCurrent(version=version, pid=pid):
                self.stored_pid, self.stored_version = pid, version
            case fx.PublishRoute(pid=pid):
                assert m.state is State.RUNNING and m.pid == pid and m.healthy is not False
                self.route = pid
            case fx.WithdrawRoute():
                self.route = None
            case fx.PrepareJob(job=job):
                self.preparing[job] = effect
            case fx.RetireOld(job=job):
                self.retiring[job] = effect
            case fx.CleanUpJob(job=job):
                self.preparing.pop(job, None)
                self.cleaning[job] = effect
            case fx.EndActor():
                self.ended = True
        return None

    # -- what the world does on its own ----------------------------------------------------

    def stage(self, job: int, pid: int = 555, port: int = 9001) -> list[fx.Effect]:
        """The preparation of `job` started its staging process."""
        prepared = self.preparing.pop(job, None)
        if prepared is not None:
            self.versions[pid] = prepared.spec.version
        self.live.add(pid)
        self.ports.add(port)
        self.staged[job] = (pid, port)
        return self.feed(JobStaged(job, pid, port, self.now))

    def finish_stop(self, gen: int, returncode: int = 0) -> None:
        pid = self.stops.pop(gen)
        if pid is not None:
            self.live.discard(pid)
        self.feed(StopFinished(gen, returncode))


def booted(desired: str = "running", policy: str = "on-failure") -> Paper:
    paper = Paper(
        FormationMachine("web", spec(policy=policy), Path("/v/1.0.0"), 8001, rng=random.Random(1))
    )
    paper.desired = desired
    paper.feed(Boot(Desired(desired), None))
    return paper


def in_state(state: State) -> Paper:
    """A machine brought to `state` by the events that lead there in real life."""
    if state is State.STOPPED:
        return booted("stopped")
    paper = booted("running")  # starting: spawned, gating
    m = paper.machine
    if state is State.STARTING:
        return paper
    if state is State.CRASHED:
        paper.request(Start())
        paper.feed(GateFailed(m.gen, "not healthy"))
        paper.finish_stop(m.gen)
        return paper
    paper.feed(GatePassed(m.gen))
    if state is State.RUNNING:
        return paper
    if state is State.STOPPING:
        paper.request(Stop())
        return paper
    assert state is State.RESTARTING
    pid = m.pid
    assert pid is not None
    paper.live.discard(pid)
    paper.feed(Exited(m.gen, 1))
    return paper

"""FormationMachine under random histories (Hypothesis stateful testing).

Rules drive requests, process exits, health results, port thefts, timer firings, stops and
every step of updates and rollbacks in any order; the pretend driver (`machine_kit.Paper`)
carries out the effects on paper. After every step the formation's promises are checked:

- at most one live process outside an update, two during one;
- every request is answered exactly once (or is still waiting to be: never lost);
- a route is published only to the running, not-unhealthy active process (checked as it is
  published, by `Paper`), and no route outlives the process's running state;
- every staging port is given back once its job is over;
- every transition is in `lifecycle.ALLOWED` (checked as it is announced, by `Paper`);
- the desired state is persisted before the request that changed it is answered, and the
  store's desired state always matches the machine's;
- after a shutdown or delete no process is spawned (checked as it is spawned, by `Paper`), and
  once nothing is left in flight (a stop, a preparation, a retirement, a cleanup) the actor
  has ended: no later request replaces the exit;
- the stored pid is the live active process's pid (what an fsup restarted after a crash would
  adopt), and the version the machine reports (and the store records) is the version that
  process was started with.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from machine_kit import Paper, booted, rollback_target, update_target

from actors.formation.machine import effects as fx
from actors.formation.machine.lifecycle import State
from actors.formation.machine.messages import (
    CancelUpdate,
    EnsureRunning,
    Exited,
    GateFailed,
    GatePassed,
    JobCleaned,
    JobFailed,
    JobStaged,
    OldRetired,
    PortTaken,
    ProbeNow,
    ProbeResult,
    Restart,
    Shutdown,
    Start,
    Stop,
    TimerFired,
)
from actors.formation.machine.update import Phase
from supervisor.core.errors import FsupError

REQUESTS = {
    "start": Start,
    "stop": Stop,
    "restart": Restart,
    "ensure": EnsureRunning,
    "probe_now": ProbeNow,
    "cancel_update": CancelUpdate,
    "shutdown": lambda: Shutdown(keep_desired=True),
    "delete": lambda: Shutdown(keep_desired=False),
    "update": update_target,
    "rollback": rollback_target,
}
CHANGES_DESIRED = {"start": "running", "restart": "running", "stop": "stopped", "delete": "stopped"}
TAKEN = FsupError("PORT_IN_USE", "taken")


class FormationHistories(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.paper: Paper = booted("running")
        self.versions = iter(f"{n}.0.0" for n in range(2, 10_000))

    @property
    def m(self) -> Any:
        return self.paper.machine

    def _active_watch(self) -> fx.Watch | None:
        pid = self.m.pid
        return self.paper.watched.get(pid) if pid is not None else None

    # -- requests ------------------------------------------------------------------------

    @precondition(lambda self: not self.paper.ended)
    @rule(name=st.sampled_from(sorted(REQUESTS)))
    def request(self, name: str) -> None:
        make = REQUESTS[name]
        request = update_target(next(self.versions)) if name == "update" else make()
        desired_before = self.m.desired
        rid = self.paper.request(request)
        wanted = CHANGES_DESIRED.get(name)
        if wanted is not None and wanted != desired_before and self.m.desired == wanted:
            order = [
                e
                for e in self.paper.last
                if isinstance(e, fx.PersistDesired)
                or (isinstance(e, fx.Answer | fx.Progress) and e.rid == rid)
            ]
            assert isinstance(order[0], fx.PersistDesired), order

    # -- the process ---------------------------------------------------------------------

    @precondition(lambda self: self._active_watch() is not None)
    @rule(code=st.sampled_from([0, 1, -9, None]))
    def active_exits(self, code: int | None) -> None:
        watch = self._active_watch()
        if watch is None:
            return
        self.paper.live.discard(watch.pid)
        self.paper.watched.pop(watch.pid)
        self.paper.feed(Exited(watch.gen, code))

    @precondition(lambda self: self.m.state is State.STARTING and self.m.pid is not None)
    @rule()
    def gate_passes(self) -> None:
        self._gate(self._active_watch(), True)

    @precondition(lambda self: self.m.state is State.STARTING and self.m.pid is not None)
    @rule()
    def gate_fails(self) -> None:
        self._gate(self._active_watch(), False)

    @precondition(lambda self: self._staging_watch() is not None)
    @rule(passed=st.booleans())
    def staging_gate(self, passed: bool) -> None:
        self._gate(self._staging_watch(), passed)

    def _gate(self, watch: fx.Watch | None, passed: bool) -> None:
        if watch is None or not watch.gate:
            return
        self.paper.feed(GatePassed(watch.gen) if passed else GateFailed(watch.gen, "nope"))

    @precondition(lambda self: self.m.state is State.RUNNING)
    @rule(ok=st.booleans(), dt=st.sampled_from([0.0, 0.5, 3.0, 10.0]))
    def probe(self, ok: bool, dt: float) -> None:
        self.paper.now += dt
        watch = self._active_watch()
        if watch is not None:
            self.paper.feed(ProbeResult(watch.gen, None if ok else "503"))

    @precondition(lambda self: self.m.pid is not None)
    @rule(staging=st.booleans())
    def port_taken(self, staging: bool) -> None:
        watch = self._staging_watch() if staging else self._active_watch()
        if watch is not None:
            self.paper.feed(PortTaken(watch.gen, TAKEN))

    @precondition(lambda self: self._staging_watch() is not None)
    @rule(code=st.sampled_from([1, -9]))
    def staging_exits(self, code: int) -> None:
        watch = self._staging_watch()
        if watch is None:
            return
        self.paper.live.discard(watch.pid)
        self.paper.watched.pop(watch.pid)
        self.paper.feed(Exited(watch.gen, code))

    def _staging_watch(self) -> fx.Watch | None:
        job = self.m.job
        if job is None or job.pid is None:
            return None
        watch = self.paper.watched.get(job.pid)
        return watch if watch is not None and watch.staging else None

    @precondition(lambda self: bool(self.paper.timers))
    @rule()
    def fire_timer(self) -> None:
        if self.paper.timers:
            gen = min(self.paper.timers, key=self.paper.timers.__getitem__)
            self.paper.now = max(self.paper.now, self.paper.timers.pop(gen))
            self.paper.feed(TimerFired(gen))

    @precondition(lambda self: bool(self.paper.stops))
    @rule(data=st.data())
    def finish_stop(self, data: st.DataObject) -> None:
        if self.paper.stops:
            gen = data.draw(st.sampled_from(sorted(self.paper.stops)))
            self.paper.finish_stop(gen, data.draw(st.sampled_from([0, -15, -9])))

    @rule()
    def spawning_fails_for_a_while(self) -> None:
        self.paper.spawn_fails = not self.paper.spawn_fails

    @rule(gen=st.integers(min_value=-5, max_value=-1))
    def stale_events(self, gen: int) -> None:
        effects = self.paper.feed(GatePassed(gen))
        effects += self.paper.feed(TimerFired(gen))
        effects += self.paper.feed(OldRetired(gen))
        assert not [e for e in effects if isinstance(e, fx.Answer)]

    # -- an update's steps ---------------------------------------------------------------

    @precondition(lambda self: bool(self.paper.preparing))
    @rule(data=st.data(), fails=st.booleans())
    def prepared(self, data: st.DataObject, fails: bool) -> None:
        if not self.paper.preparing:
            return
        job = data.draw(st.sampled_from(sorted(self.paper.preparing)))
        effect = self.paper.preparing[job]
        if fails:
            self.paper.preparing.pop(job)
            self.paper.feed(JobFailed(job, TAKEN))
        elif effect.live:
            self.paper.stage(job, next(self.paper.pids), next(self.paper.next_port))
        else:
            self.paper.preparing.pop(job)
            self.paper.feed(JobStaged(job, None, None))

    @precondition(lambda self: bool(self.paper.retiring))
    @rule(data=st.data())
    def retired(self, data: st.DataObject) -> None:
        if not self.paper.retiring:
            return
        job = data.draw(st.sampled_from(sorted(self.paper.retiring)))
        effect = self.paper.retiring.pop(job)
        if effect.pid is not None:
            self.paper.live.discard(effect.pid)
        if effect.port is not None:
            self.paper.ports.discard(effect.port)
        self.paper.feed(OldRetired(job))

    @precondition(lambda self: bool(self.paper.cleaning))
    @rule(data=st.data())
    def cleaned(self, data: st.DataObject) -> None:
        if not self.paper.cleaning:
            return
        job = data.draw(st.sampled_from(sorted(self.paper.cleaning)))
        self.paper.cleaning.pop(job)
        self.paper.preparing.pop(job, None)
        pid, port = self.paper.staged.pop(job, (None, None))
        if pid is not None:
            self.paper.live.discard(pid)
            self.paper.watched.pop(pid, None)
        if port is not None:
            self.paper.ports.discard(port)
        self.paper.feed(JobCleaned(job))

    # -- the promises --------------------------------------------------------------------

    @invariant()
    def live_processes(self) -> None:
        in_update = self.m.job is not None or bool(self.paper.retiring or self.paper.cleaning)
        assert len(self.paper.live) <= (2 if in_update else 1), self.paper.live

    @invariant()
    def every_request_answered_once_or_waiting(self) -> None:
        m, paper = self.m, self.paper
        waiting = set(m.start_waiters) | set(m.stop_waiters)
        if m.job is not None:
            waiting |= set(m.job.waiters) | set(m.job.cancel_waiters)
        assert not waiting & set(paper.answers), "answered and still waiting"
        lost = set(paper.requests) - set(paper.answers) - waiting
        if paper.ended:
            lost -= set(paper.requests)  # the actor ended: its end fails what is left
        assert not lost, f"requests neither answered nor waiting: {lost}"

    @invariant()
    def route_only_to_the_running_process(self) -> None:
        if self.paper.route is not None:
            assert self.m.state is State.RUNNING and self.paper.route == self.m.pid

    @invariant()
    def staging_ports_given_back(self) -> None:
        if self.m.job is None and not self.paper.retiring and not self.paper.cleaning:
            assert self.paper.ports == {self.m.port}, self.paper.ports

    @invariant()
    def desired_state_persisted(self) -> None:
        assert self.paper.desired == self.m.desired
        for rid, answer in self.paper.answers.items():
            request = self.paper.requests[rid]
            if answer.error is None and isinstance(request, Start | Restart):
                assert answer.value["status"] == "running"

    @invariant()
    def an_exit_ends_the_actor(self) -> None:
        paper = self.paper
        in_flight = paper.stops or paper.preparing or paper.retiring or paper.cleaning
        if paper.exit_asked and not in_flight:
            assert paper.ended, "a shutdown or delete with nothing left to wait for"

    @invariant()
    def stored_pid_is_the_live_pid(self) -> None:
        pid = self.m.pid
        assert self.paper.stored_pid == pid
        assert pid is None or pid in self.paper.live

    @invariant()
    def reported_version_is_the_running_version(self) -> None:
        m = self.m
        assert self.paper.stored_version == m.spec.version
        if m.pid is not None:
            assert self.paper.versions[m.pid] == m.spec.version

    @invariant()
    def job_phase_is_live(self) -> None:
        job = self.m.job
        if job is not None:
            assert job.phase in (Phase.PREPARING, Phase.GATING, Phase.RETIRING, Phase.ABORTING)
        if job is not None and job.phase is Phase.GATING:
            # A staging process is gated only while the old version serves.
            assert self.m.state is State.RUNNING and self.m.pid is not None


FormationHistories.TestCase.settings = settings(
    max_examples=int(os.environ.get("FSUP_MACHINE_EXAMPLES", "1000")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_formation_histories = FormationHistories.TestCase

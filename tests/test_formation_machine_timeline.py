"""What the formation's events say happened (issue 19's timeline): how a process ended (its
exit code or signal by name, the stderr tail, the uptime), a give-up's count and window, an
undone update's stage and error; and `last_error`, kept after an unexpected end until the
operator acts. Pure: events fed to the machine, effects read back."""

from __future__ import annotations

from typing import Any

from machine_kit import Paper, in_state, update_target

from actors.formation.machine import effects as fx
from actors.formation.machine.lifecycle import State
from actors.formation.machine.messages import (
    Exited,
    GateFailed,
    GatePassed,
    JobCleaned,
    Restart,
    Start,
    Stop,
    TimerFired,
)


def published(effects: list[fx.Effect], type_: str) -> list[dict[str, Any]]:
    return [e.data for e in effects if isinstance(e, fx.Publish) and e.type == type_]


def running_for(seconds: float) -> Paper:
    """A running formation whose process was spawned at 0 and is now `seconds` old."""
    paper = in_state(State.RUNNING)
    paper.now = seconds
    return paper


def back_up(paper: Paper) -> list[fx.Effect]:
    """The backoff elapses and the new process passes its gate; the effects of both."""
    m = paper.machine
    (gen,) = paper.timers
    paper.now = paper.timers.pop(gen)
    effects = paper.feed(TimerFired(gen))
    return effects + paper.feed(GatePassed(m.gen))


def test_a_sigkill_says_so_with_the_tail_and_uptime() -> None:
    paper = running_for(12.5)
    m = paper.machine
    pid = m.pid
    effects = paper.feed(Exited(m.gen, -9, "x" * 5000 + "the end\n"))
    (change,) = published(effects, "formation_state_changed")
    assert (change["from"], change["to"], change["reason"]) == ("running", "restarting", "exited")
    ended = change["exit"]
    assert ended["pid"] == pid and ended["uptime_s"] == 12.5
    assert (ended["exit_code"], ended["signal"]) == (None, "SIGKILL")
    assert ended["description"] == "killed by SIGKILL"
    assert ended["stderr_tail"].endswith("the end\n") and len(ended["stderr_tail"]) == 1000
    assert m.last_error == "process was killed by SIGKILL"


def test_an_exit_code_is_given_as_such_and_only_the_first_transition_carries_it() -> None:
    paper = running_for(3)
    m = paper.machine
    effects = paper.feed(Exited(m.gen, 3, ""))
    (change,) = published(effects, "formation_state_changed")
    assert change["exit"]["exit_code"] == 3 and change["exit"]["signal"] is None
    assert change["exit"]["description"] == "exited with code 3"
    later = published(back_up(paper), "formation_state_changed")
    assert [c["to"] for c in later] == ["starting", "running"]
    assert all("exit" not in c for c in later)


def test_last_error_survives_the_automatic_restart_until_the_operator_acts() -> None:
    paper = running_for(5)
    m = paper.machine
    paper.feed(Exited(m.gen, -9, ""))
    back_up(paper)
    assert m.state is State.RUNNING and m.last_error == "process was killed by SIGKILL"
    paper.request(Restart())
    assert m.last_error is None  # the operator asked for a fresh start
    paper.finish_stop(m.gen, -15)
    assert m.state is State.STARTING and m.last_error is None
    paper.feed(Exited(m.gen, 1, ""))  # fails to start
    assert m.last_error == "process exited with code 1 before it was healthy"
    paper.request(Stop())
    assert m.last_error is None


def test_a_start_clears_last_error() -> None:
    paper = in_state(State.CRASHED)
    assert paper.machine.last_error
    paper.request(Start())
    assert paper.machine.last_error is None


def test_a_crash_loop_gives_up_with_its_count_and_window() -> None:
    paper = running_for(1)
    m = paper.machine
    changes: list[dict[str, Any]] = []
    for _ in range(10):
        changes += published(paper.feed(Exited(m.gen, 2, "boom\n")), "formation_state_changed")
        if m.state is State.CRASHED:
            break
        back_up(paper)
        paper.now += 1
    assert m.state is State.CRASHED
    final = changes[-1]
    assert (final["to"], final["reason"]) == ("crashed", "gave_up")
    assert final["gave_up"] == {"restarts": 3, "window_s": 100, "max_restarts": 3}
    assert "giving up" in final["error"] and final["error"] == m.last_error
    assert final["exit"]["exit_code"] == 2 and final["exit"]["stderr_tail"] == "boom\n"


def test_a_failed_update_says_its_stage_and_the_checks_last_error() -> None:
    paper = in_state(State.RUNNING)
    rid = paper.request(update_target())
    m = paper.machine
    job = m.job
    assert job is not None
    paper.stage(job.id)
    why = "not healthy after 5s (last error: connection refused)"
    paper.feed(GateFailed(job.gen, why, "Traceback: ...\n"))
    effects = paper.feed(JobCleaned(job.id))
    (aborted,) = published(effects, "formation_update_aborted")
    assert aborted["kind"] == "update" and aborted["stage"] == "health_check"
    assert (aborted["version"], aborted["previous_version"]) == ("2.0.0", "1.0.0")
    assert aborted["code"] == "HEALTH_CHECK_FAILED"
    assert "connection refused" in aborted["error"]
    assert aborted["stderr_tail"] == "Traceback: ...\n"
    # Announced before the request is answered, as a done update is.
    kinds = [type(e) for e in effects if isinstance(e, fx.Publish | fx.Answer)]
    assert kinds.index(fx.Publish) < kinds.index(fx.Answer) and rid in paper.answers


def test_an_updated_process_knows_its_uptime_from_its_staging_spawn() -> None:
    paper = in_state(State.RUNNING)
    paper.request(update_target())
    m = paper.machine
    job = m.job
    assert job is not None
    paper.now = 10
    paper.stage(job.id)
    paper.now = 11
    paper.feed(GatePassed(job.gen))
    paper.now = 40
    (change,) = published(paper.feed(Exited(m.gen, -15, "")), "formation_state_changed")
    assert change["exit"]["uptime_s"] == 30 and change["exit"]["signal"] == "SIGTERM"

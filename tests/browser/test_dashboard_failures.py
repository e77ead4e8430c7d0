"""The dashboard when things fail (issue 19, item 5), in a real browser against a real fsup:
health and uptime only for a running process, a header that follows the event stream, a
crashed formation's exit and reason, buttons that follow the state, action errors shown as
errors, no stale "restart: done" after a kill -9, and a log view that keeps the reader's place.

Two formations of the nasty fixture: `brittle` gives up at its first crash (`max_restarts:
0`, so `crashed` lasts), `chatty` serves and prints what it is asked to (`/say`). One server
and one page for the module; every wait is on a page condition with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import Server, nasty_bundle, stops_clean, wait_for
from page_kit import Run, chromium_page, free_port, require_browser

pytestmark = pytest.mark.e2e

expect = require_browser()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    home = tmp_path_factory.mktemp("browser-failures") / "muxi"
    home.mkdir()
    server = Server(home).start("--port", str(free_port()))
    with stops_clean(server, home):
        server.rpc.deploy(nasty_bundle("brittle", restart={"max_restarts": 0}))
        server.rpc.deploy(nasty_bundle("chatty"))
        with chromium_page(server) as run_:
            yield run_


def say(run: Run, stream: str, *lines: str) -> None:
    """Have chatty print `lines` to `stream`, straight on its port."""
    port = run.server.formation("chatty")["port"]
    query = {"stream": stream, "text": ",".join(lines)}
    httpx.get(f"http://127.0.0.1:{port}/say", params=query, trust_env=False).raise_for_status()


def record(run: Run, selector: str, name: str) -> None:
    """Every text `selector` takes from now on, with its time, kept in the page as
    `window[name]` (a MutationObserver: no change is missed between two looks)."""
    run.page.evaluate(
        """([selector, name]) => {
          const node = document.querySelector(selector);
          window[name] = [[performance.now(), node.textContent]];
          new MutationObserver(() => window[name].push([performance.now(), node.textContent]))
            .observe(node, {childList: true, characterData: true, subtree: true});
        }""",
        [selector, name],
    )


def first_time(run: Run, name: str, predicate: str) -> Any:
    """When `window[name]` first took a text for which `predicate` (JS, of `t`) holds."""
    return run.page.wait_for_function(
        f"() => (window['{name}'].find(([, t]) => {predicate}) || [null])[0]"
    ).json_value()


def test_health_and_uptime_show_for_a_running_process_only(run: Run) -> None:
    run.page.goto(f"{run.server.url}/ui/")
    for formation_id in ("brittle", "chatty"):
        expect(run.state_of(formation_id)).to_have_text("running")
        expect(run.row(formation_id).get_by_test_id("health")).to_have_text("healthy")
    expect(run.row("chatty").get_by_test_id("uptime")).to_have_text(re.compile(r"^\d+ (s|min)$"))
    run.server.rpc.call("POST", "/rpc/formations/chatty/stop")
    expect(run.state_of("chatty")).to_have_text("stopped")
    expect(run.row("chatty").get_by_test_id("health")).to_have_text("—")
    expect(run.row("chatty").get_by_test_id("uptime")).to_have_text("—")
    run.server.rpc.call("POST", "/rpc/formations/chatty/start")
    expect(run.state_of("chatty")).to_have_text("running")
    expect(run.row("chatty").get_by_test_id("health")).to_have_text("healthy")
    # Between two status events (every 5 s) the uptime counts on: it is not left at "0 s".
    expect(run.row("chatty").get_by_test_id("uptime")).to_have_text(
        re.compile(r"^([2-9]|\d\d) s$"), timeout=4000
    )


def test_the_header_follows_a_crash_at_once_and_the_row_says_why(run: Run) -> None:
    """A SIGKILL of a formation that gives up at once: within a second of its row turning
    `crashed`, the header no longer counts it running (the status event comes every 5 s;
    the header must not wait for it). The row then shows the exit and the reason."""
    summary = run.page.get_by_test_id("summary")
    expect(summary).to_have_text("2 running")
    record(run, 'tr[data-id="brittle"] [data-testid=state]', "__state")
    record(run, "[data-testid=summary]", "__summary")
    os.kill(run.server.formation("brittle")["pid"], signal.SIGKILL)
    crashed_at = first_time(run, "__state", "t === 'crashed'")
    counted_at = first_time(run, "__summary", "!t.startsWith('2 running')")
    assert counted_at - crashed_at < 1000, (crashed_at, counted_at)
    expect(summary).to_have_text("1 running · 1 crashed")
    why = run.row("brittle").get_by_test_id("why")
    expect(why).to_contain_text("killed by SIGKILL")
    expect(why).to_contain_text("giving up")  # last_error: the give-up's reason
    expect(run.row("brittle").get_by_test_id("health")).to_have_text("—")
    expect(run.row("brittle").get_by_test_id("uptime")).to_have_text("—")
    run.shot("crashed-fleet")
    run.page.locator('table.fleet a[href="#/f/brittle"]').click()
    expect(run.page.get_by_test_id("formation-state")).to_have_text("crashed")
    expect(run.page.get_by_test_id("formation-why")).to_contain_text("killed by SIGKILL")
    expect(run.page.get_by_test_id("formation-exit")).to_have_text("killed by SIGKILL")
    expect(run.page.get_by_test_id("formation-health")).to_have_text("—")
    run.shot("crashed-formation")


def actions(run: Run) -> Any:
    return run.page.get_by_role("group", name="Actions")


def button(run: Run, name: str) -> Any:
    return actions(run).get_by_role("button", name=name, exact=True)


def test_buttons_follow_the_state_and_errors_are_shown_as_errors(run: Run) -> None:
    page = run.page
    page.goto(f"{run.server.url}/ui/#/f/chatty")
    expect(page.get_by_test_id("formation-state")).to_have_text("running")
    expect(button(run, "Start")).to_be_disabled()  # running
    expect(button(run, "Stop")).to_be_enabled()
    expect(button(run, "Restart")).to_be_enabled()
    expect(button(run, "Roll back")).to_be_disabled()  # one version: nothing older
    # The page's own handler, called as the button would if it were enabled: the server's
    # refusal is a visible error with its message, not a grey note.
    page.evaluate("Alpine.$data(document.querySelector('[x-data]')).act('rollback')")
    error = page.get_by_test_id("action-error")
    expect(error).to_contain_text("rollback failed")
    expect(error).to_contain_text("no version below 1.0.0")
    assert error.evaluate("e => getComputedStyle(e).color") != page.get_by_test_id(
        "action-note"
    ).evaluate("e => getComputedStyle(e).color")
    run.shot("action-error")
    # Chromium logs the refused request itself; that one was asked for.
    run.errors[:] = [e for e in run.errors if "status of 409" not in e]
    button(run, "Stop").click()
    expect(page.get_by_test_id("formation-state")).to_have_text("stopped")
    expect(error).to_be_hidden()
    expect(button(run, "Stop")).to_be_disabled()
    expect(button(run, "Start")).to_be_enabled()
    expect(page.get_by_test_id("formation-uptime")).to_have_text("—")
    button(run, "Start").click()
    expect(page.get_by_test_id("formation-state")).to_have_text("running")
    expect(button(run, "Start")).to_be_disabled()


def test_after_a_kill_the_restart_note_is_gone(run: Run) -> None:
    """ "restart: done" was true when it was written; after a kill -9 (and a restart by the
    policy) it is not the story any more: the note goes and the exit is shown."""
    page = run.page
    button(run, "Restart").click()
    note = page.get_by_test_id("action-note")
    expect(note).to_contain_text("restart: done")
    record(run, "[data-testid=formation-state]", "__fstate")
    old_pid = run.server.formation("chatty")["pid"]
    os.kill(old_pid, signal.SIGKILL)
    first_time(run, "__fstate", "t === 'restarting'")
    expect(page.get_by_test_id("formation-state")).to_have_text("running")
    wait_for(lambda: run.server.formation("chatty")["pid"] not in (None, old_pid))
    expect(note).to_have_text("")
    expect(page.get_by_test_id("formation-exit")).to_have_text("killed by SIGKILL")
    # The timeline says it too, live, newest first: the exit in words, then the restart.
    events = page.get_by_test_id("timeline-events")
    expect(events).to_contain_text("running \u2192 restarting (exited): killed by SIGKILL")
    expect(events.locator("li").first).to_contain_text("starting \u2192 running")


def test_the_timeline_is_kept_across_a_reload(run: Run) -> None:
    """The page's timeline comes from the kept events (GET /api/v1/formations/{id}/events),
    not only from what this page saw: a fresh load shows the kill of the test before."""
    page = run.page
    page.goto(f"{run.server.url}/ui/#/f/chatty")
    page.reload()
    events = page.get_by_test_id("timeline-events")
    expect(events).to_contain_text("killed by SIGKILL")
    expect(page.get_by_test_id("timeline")).to_be_visible()


def test_the_log_keeps_the_readers_place_shows_one_stream_and_times(run: Run) -> None:
    page = run.page
    log = page.get_by_test_id("log")
    follow = page.get_by_test_id("log-follow")
    expect(follow).to_have_attribute("aria-pressed", "true")
    say(run, "stdout", *(f"first-{n:03}" for n in range(80)))
    expect(log.locator("li", has_text="first-079")).to_have_count(1)
    page.wait_for_function(
        "() => { const l = document.querySelector('[data-testid=log]');"
        " return l.scrollHeight - l.scrollTop - l.clientHeight < 8; }"
    )
    log.hover()
    page.mouse.wheel(0, -3000)  # the reader scrolls up
    expect(follow).to_have_attribute("aria-pressed", "false")
    place = log.evaluate("l => l.scrollTop")
    say(run, "stdout", *(f"later-{n:03}" for n in range(40)))
    expect(log.locator("li", has_text="later-039")).to_have_count(1)
    time.sleep(0.3)  # a few frames of health-check lines on top: the place must hold
    assert abs(log.evaluate("l => l.scrollTop") - place) <= 2
    follow.click()
    expect(follow).to_have_attribute("aria-pressed", "true")
    page.wait_for_function(
        "() => { const l = document.querySelector('[data-testid=log]');"
        " return l.scrollHeight - l.scrollTop - l.clientHeight < 8; }"
    )
    # A line read as it is written has a time; history read back from the files has none yet.
    stamped = log.locator("li", has_text="later-039").locator("time")
    expect(stamped).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))
    page.get_by_test_id("log-stream").select_option("stdout")
    say(run, "stderr", "only-err")
    say(run, "stdout", "only-out")
    expect(log.locator("li", has_text="only-out")).to_have_count(1)
    assert log.locator("li", has_text="only-err").count() == 0
    assert log.locator("li.log-stderr").count() == 0
    expect(log.locator("li", has_text="first-000").locator("time")).to_have_count(0)
    page.get_by_test_id("log-stream").select_option("stderr")
    expect(log.locator("li", has_text="only-err")).to_have_count(1)
    assert log.locator("li.log-stdout").count() == 0
    run.shot("log-view")


def test_a_snapshot_fetched_during_an_event_does_not_undo_it(run: Run) -> None:
    """A row's snapshot asked for before an event and answered after it (a busy actor can take
    seconds to answer) is older than the event: the event's state stands. The page's own
    handlers, with the answer held back until the event is in."""
    page = run.page
    page.goto(f"{run.server.url}/ui/#/")
    expect(run.state_of("chatty")).to_have_text("running")
    figures = page.evaluate(
        """async () => {
          const app = Alpine.$data(document.querySelector('[x-data]'));
          const call = app.call;
          let release;
          const held = new Promise((resolve) => { release = resolve; });
          app.call = async (...args) => { const answer = await call.apply(app, args);
            await held; return answer; };
          const fetching = app.fetchRow('chatty');
          await new Promise((resolve) => setTimeout(resolve, 100));
          const row = app.fleet.find((r) => r.id === 'chatty');
          app.apply({type: 'formation_state_changed', data: {formation_id: 'chatty',
            from: 'running', to: 'stopping', reason: 'delete', pid: row.pid,
            version: row.version, restart_count: row.restart_count}});
          release();
          await fetching;
          app.call = call;
          const after = {status: row.status, deleting: row.deleting};
          await app.refresh();  // back to the truth for the tests that follow
          return after;
        }"""
    )
    assert figures == {"status": "stopping", "deleting": True}
    expect(run.state_of("chatty")).to_have_text("running")


def test_no_console_error(run: Run) -> None:
    assert run.errors == []

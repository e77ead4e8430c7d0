"""The dashboard in a real browser (headless Chromium driven by playwright) against a real
fsup running the example formations: the fleet, a SIGKILL seen as `restarting` then
`running` without a reload, stop and start from the page, a search whose hits arrive live,
a reload that shows the same state, a 360 px wide page; and, over the whole run, no request
with the token in its URL and no console error. Screenshots go to tests/browser/artifacts/.

Lean on purpose (the machine is shared): one server and one browser page for the module, the
tests in order on it, and every wait is on a page condition with a deadline, never a sleep.
Skipped, saying why, when there is no playwright or no Chromium (.ci/run installs Debian's
`chromium`; `playwright install` is never needed: the browser is launched by its path).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from helpers import EXAMPLES, Server, nasty_bundle, stops_clean, wait_for
from page_kit import Run, chromium_page, free_port, require_browser

pytestmark = pytest.mark.e2e

expect = require_browser()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    home = tmp_path_factory.mktemp("browser") / "muxi"
    home.mkdir()
    port = free_port()  # fixed, so that fsup can be restarted under the page
    server = Server(home).start("--deploy", str(EXAMPLES), "--port", str(port))
    with stops_clean(server, home):
        wait_for(lambda: _running(server, {"hello", "flaky"}), timeout=60)
        with chromium_page(server) as run_:
            yield run_


def _running(server: Server, ids: set[str]) -> bool:
    listing = server.rpc.call("GET", "/rpc/formations")["formations"]
    return {f["id"] for f in listing if f["status"] == "running"} >= ids


def test_the_fleet_is_shown(run: Run) -> None:
    started = time.monotonic()
    run.page.goto(f"{run.server.url}/ui/")
    for formation_id in ("hello", "flaky"):
        expect(run.state_of(formation_id)).to_have_text("running")
    print(f"fleet shown {time.monotonic() - started:.2f}s after navigation")
    expect(run.page.get_by_test_id("connection")).to_have_text("live")
    row = run.page.locator('tr[data-id="hello"]')
    expect(row).to_contain_text("1.0.0")
    expect(row).to_contain_text("MiB")  # memory, from psutil
    run.shot("fleet")


def test_a_killed_process_is_seen_restarting_then_running(run: Run) -> None:
    """Every text the state cell takes is recorded in the page (a MutationObserver), so a
    `restarting` that lasts a fraction of a second is not missed between two looks."""
    run.page.evaluate(
        """() => {
          window.__states = [];
          const cell = document.querySelector('tr[data-id="hello"] [data-testid=state]');
          new MutationObserver(() => window.__states.push(cell.textContent))
            .observe(cell, {childList: true, characterData: true, subtree: true});
        }"""
    )
    old_pid = run.server.formation("hello")["pid"]
    os.kill(old_pid, signal.SIGKILL)
    run.page.wait_for_function("() => window.__states.includes('restarting')")
    expect(run.state_of("hello")).to_have_text("running")
    new_pid = run.server.formation("hello")["pid"]
    assert new_pid != old_pid
    expect(run.page.locator('tr[data-id="hello"]')).to_contain_text(str(new_pid))


def test_stop_and_start_from_the_formation_page(run: Run) -> None:
    page = run.page
    page.locator('table.fleet a[href="#/f/hello"]').click()
    state = page.get_by_test_id("formation-state")
    expect(state).to_have_text("running")
    expect(page.locator("ol.log li").first).to_be_visible()  # log lines
    # The version that wrote them, marked where it changes (the keeper's files say it).
    expect(page.locator("ol.log li.log-version").first).to_have_text("\u2014 version 1.0.0 \u2014")
    run.shot("formation")
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(state).to_have_text("stopped")
    assert run.server.formation("hello")["status"] == "stopped"
    page.get_by_role("button", name="Start", exact=True).click()
    expect(state).to_have_text("running")
    assert run.server.formation("hello")["status"] == "running"
    page.get_by_role("link", name="← Fleet").click()
    expect(run.state_of("hello")).to_have_text("running")


def test_a_search_shows_its_hits_as_they_arrive(run: Run) -> None:
    page = run.page
    page.get_by_role("link", name="Searches").click()
    page.get_by_label("New search").fill("listening on port")
    page.keyboard.press("Enter")  # the form, by keyboard
    expect(page.get_by_test_id("search-state")).to_have_text("complete")
    hits = page.locator("ol.hits li")
    expect(hits).to_have_count(2)  # one per formation's start line
    expect(page.get_by_test_id("hit-total")).to_have_text("2")
    expect(page.get_by_test_id("search-list").locator("li")).to_have_count(1)
    run.shot("search-thread")


def test_a_reload_shows_the_same_state(run: Run) -> None:
    page = run.page
    url = page.url
    assert "#/searches/" in url
    page.reload()
    expect(page.get_by_test_id("search-state")).to_have_text("complete")
    expect(page.locator("ol.hits li")).to_have_count(2)
    page.goto(f"{run.server.url}/ui/#/")
    for formation_id in ("hello", "flaky"):
        expect(run.state_of(formation_id)).to_have_text("running")


def test_deleting_a_search_asks_first(run: Run) -> None:
    page = run.page
    page.get_by_role("link", name="Searches").click()
    page.get_by_test_id("search-list").get_by_role("link").first.click()
    expect(page.get_by_test_id("search-state")).to_have_text("complete")
    dialog = page.locator("dialog")
    page.get_by_role("button", name="Delete…").click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")  # changed my mind: nothing is deleted
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("search-list").locator("li")).to_have_count(1)
    page.get_by_role("button", name="Delete…").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("search-list").locator("li")).to_have_count(0)
    expect(page.get_by_text("No searches yet.")).to_be_visible()
    page.get_by_role("link", name="Fleet").click()


def test_an_overflow_notice_makes_the_page_fetch_its_snapshot_again(run: Run) -> None:
    """The bus drops a subscriber that fell behind with an `overflow` notice (and a resume
    from too far back starts with `reset`): the page cannot trust its rows, it re-fetches."""
    for notice in ("overflow", "reset"):
        with run.page.expect_request(lambda r: r.url.endswith("/api/v1/formations")):
            run.page.evaluate(
                "(type) => Alpine.$data(document.querySelector('[x-data]'))"
                ".onEvent({type, data: {}})",
                notice,
            )
    expect(run.state_of("hello")).to_have_text("running")


def test_a_formation_being_deleted_says_so_until_it_is_gone(run: Run) -> None:
    """A formation that ignores SIGTERM takes its whole stop timeout (3 s) to go: meanwhile
    its row says `deleting` (it is not gone, its process still holds its port), then it
    leaves the fleet without a reload."""
    page = run.page
    page.goto(f"{run.server.url}/ui/#/")
    run.server.rpc.deploy(nasty_bundle("stubborn", "stubborn"))
    expect(run.state_of("stubborn")).to_have_text("running")
    deleting = threading.Thread(
        target=run.server.rpc.call, args=("DELETE", "/rpc/formations/stubborn")
    )
    deleting.start()
    try:
        expect(run.state_of("stubborn")).to_have_text("deleting")
        assert run.server.formation("stubborn")["deleting"] is True
        run.shot("deleting")
        expect(page.locator('tr[data-id="stubborn"]')).to_have_count(0)
    finally:
        deleting.join(30)


def test_readable_at_360_pixels(run: Run) -> None:
    page = run.page
    page.set_viewport_size({"width": 360, "height": 740})
    try:
        expect(run.state_of("hello")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"the page is {width}px wide at 360"
        run.shot("fleet-360")
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})


def test_a_big_fleet_and_a_flood_of_hits_stay_smooth(run: Run) -> None:
    """100 formations and 10,000 hits, fed to the page's own handlers: the rows are keyed
    and patched in place (the same DOM rows before and after 1,000 events), and the hits
    page never holds more than one page of results whatever arrives."""
    figures = run.page.evaluate(
        """async () => {
          const root = document.querySelector('[x-data]');
          const app = Alpine.$data(root);
          location.hash = '#/';
          const rows = Array.from({length: 100}, (_, i) => ({
            id: 'f' + String(i).padStart(3, '0'), status: 'running', version: '1.0.0',
            healthy: true, restart_count: 0, port: 20000 + i, pid: 1000 + i,
            cpu_percent: 0, rss_bytes: 1 << 20, uptime_s: 10, versions: ['1.0.0'] }));
          let t = performance.now();
          app.mergeFleet([...app.fleet.map((r) => ({...r})), ...rows]);
          await new Promise(requestAnimationFrame);
          const firstRender = performance.now() - t;
          const before = document.querySelector('tr[data-id="f050"]');
          t = performance.now();
          for (let n = 0; n < 1000; n++) {
            const id = 'f' + String(n % 100).padStart(3, '0');
            app.apply({type: 'formation_state_changed', data: {formation_id: id,
              from: 'running', to: n % 2 ? 'running' : 'restarting', pid: 5000 + n,
              version: '1.0.0', restart_count: n}});
          }
          await new Promise(requestAnimationFrame);
          const events = performance.now() - t;
          const same = before === document.querySelector('tr[data-id="f050"]');
          // 10,000 hits, newest first, on the first page of a thread.
          app.sort = 'recent'; app.offset = 0; app.filter = '';
          app.searchId = 'synthetic';
          app.thread = {search: {id: 'synthetic', keyword: 'x', state: 'running'},
            progress: {phase: 'scanning', percent: 0}, telemetry: {}};
          app.results = {items: [], total: 0};
          app.view = 'searches';  // shown without routing: no such search on the server
          t = performance.now();
          for (let n = 0; n < 10000; n++) {
            app.applySearch('search_hit_found', 'synthetic', {result_id: 'r' + n,
              title: 'hit ' + n, kind: 'log', sources: ['f001'], first_seen: ''});
            if (n % 500 === 499) await new Promise(requestAnimationFrame);
          }
          await new Promise(requestAnimationFrame);
          await new Promise(requestAnimationFrame);
          const hits = performance.now() - t;
          return {firstRender, events, same, hits,
            rows: document.querySelectorAll('table.fleet tbody tr').length,
            hitRows: document.querySelectorAll('ol.hits li').length,
            total: app.results.total};
        }"""
    )
    print(
        f"100 formations rendered in {figures['firstRender']:.0f} ms; 1,000 state events "
        f"applied in {figures['events']:.0f} ms; 10,000 hits in {figures['hits']:.0f} ms, "
        f"{figures['hitRows']} rows in the page"
    )
    assert figures["rows"] >= 100 and figures["same"], "rows are patched, not rebuilt"
    assert figures["hitRows"] == 50 and figures["total"] == 10_000
    assert figures["events"] < 5000 and figures["hits"] < 10_000
    run.page.goto(f"{run.server.url}/ui/")  # back to the real fleet
    expect(run.state_of("hello")).to_have_text("running")


# What Chromium logs while the server it talks to is down: failed connections, not the page's.
DOWN = ("ERR_CONNECTION_REFUSED", "ERR_EMPTY_RESPONSE", "ERR_INCOMPLETE_CHUNKED_ENCODING")


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_while_fsup_is_down_the_page_says_so_greys_and_disables_until_it_is_back(
    run: Run, how: str
) -> None:
    """Issue 19: fsup stopped (SIGTERM), then killed (SIGKILL: the connection just drops, its
    formations keep running and are adopted), under an open page. A banner across the top says
    so, the rows and facts are greyed and every action button is disabled; fsup started again
    on the same home and port, the banner goes once the page has its snapshot again, and the
    rows are live (the current process's pid, without a reload)."""
    page, server = run.page, run.server
    port = server.url.rsplit(":", 1)[1]
    page.goto(f"{server.url}/ui/#/f/hello")
    expect(page.get_by_test_id("formation-state")).to_have_text("running")
    actions = page.get_by_role("group", name="Actions").get_by_role("button")
    expect(actions.filter(has_text="Stop")).to_be_enabled()
    offline = page.get_by_test_id("offline")
    expect(offline).to_be_hidden()
    before = len(run.errors)
    if how == "stopped":
        assert server.stop() == 0
    else:
        server.kill()
    expect(offline).to_contain_text("fsup is not answering")
    expect(page.get_by_test_id("connection")).not_to_have_text("live")
    expect(page.locator("main")).to_have_class("stale")
    for index in range(actions.count()):
        expect(actions.nth(index)).to_be_disabled()
    run.shot(f"fsup-{how}-formation")
    page.get_by_role("link", name="← Fleet").click()
    row = page.locator('tr[data-id="hello"]')
    expect(row).to_be_visible()
    assert float(row.evaluate("r => getComputedStyle(r.parentElement).opacity")) < 1
    expect(offline).to_be_visible()
    run.shot(f"fsup-{how}-fleet")
    server.start("--port", port)
    expect(offline).to_be_hidden(timeout=60_000)
    expect(page.get_by_test_id("connection")).to_have_text("live")
    expect(page.locator("main")).not_to_have_class("stale")
    assert float(row.evaluate("r => getComputedStyle(r.parentElement).opacity")) == 1
    for formation_id in ("hello", "flaky"):
        expect(run.state_of(formation_id)).to_have_text("running", timeout=60_000)
    new_pid = server.formation("hello")["pid"]
    expect(row).to_contain_text(str(new_pid))
    page.locator('table.fleet a[href="#/f/hello"]').click()
    expect(actions.filter(has_text="Stop")).to_be_enabled()
    during = run.errors[before:]
    del run.errors[before:]
    assert all(any(mark in error for mark in DOWN) for error in during), during


def test_logging_out_ends_the_session_and_a_reload_opens_a_new_one(run: Run) -> None:
    page = run.page
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_test_id("connection")).to_have_text("no session")
    expect(page.get_by_role("alert")).to_contain_text("Logged out")
    page.reload()
    expect(page.get_by_test_id("connection")).to_have_text("live")
    expect(run.state_of("hello")).to_have_text("running")


def test_no_token_in_any_url_and_no_console_error(run: Run) -> None:
    token = (run.server.home / "server" / "api.token").read_text().strip()
    assert run.urls, "the page made no request"
    leaked = [url for url in run.urls if token in url or "token=" in url.lower()]
    assert leaked == []
    assert run.errors == []
    stored = run.page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert token not in stored

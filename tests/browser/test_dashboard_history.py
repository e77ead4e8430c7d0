"""The history on the dashboard (issue 19, item 4), in a real browser against a real fsup: a
CPU sparkline in the fleet row, drawn once the 5 s ticks have sampled the process, and the
four charts (CPU, memory, requests/s, restarts) on the formation page, each with its last value
and its scale. Every wait is on a page condition under a deadline (three ticks: the first look
at a process gives no CPU figure, and the page fetches on the `status` tick)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from helpers import Server, nasty_bundle, stops_clean
from page_kit import Run, chromium_page, free_port, require_browser

pytestmark = pytest.mark.e2e

expect = require_browser()
TICKS_MS = 45_000  # three 5 s samples and a `status` tick, on a busy machine


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    home = tmp_path_factory.mktemp("browser-history") / "muxi"
    home.mkdir()
    server = Server(home).start("--port", str(free_port()))
    with stops_clean(server, home):
        server.rpc.deploy(nasty_bundle("alpha"))
        with chromium_page(server) as run_:
            yield run_


def test_the_fleet_row_has_a_cpu_sparkline(run: Run) -> None:
    page = run.page
    page.goto(f"{run.server.url}/ui/")
    spark = run.row("alpha").locator("[data-testid=spark] path")
    # A line: a move to the first point and at least one segment to the next.
    expect(spark).to_have_attribute("d", _line(), timeout=TICKS_MS)
    title = run.row("alpha").locator("[data-testid=spark] title")
    expect(title).to_contain_text("CPU, last")
    assert any("/api/v1/history?points=60" in url for url in run.urls)
    assert not run.errors, run.errors


def test_the_formation_page_shows_four_charts(run: Run) -> None:
    page = run.page
    proxied = f"{run.server.url}/api/alpha/visit"
    for _ in range(20):  # requests for the requests/s chart to count
        httpx.get(proxied, trust_env=False, timeout=10)
    page.goto(f"{run.server.url}/ui/#/f/alpha")
    charts = page.locator("[data-testid=chart]")
    expect(charts).to_have_count(4)
    keys = [charts.nth(i).get_attribute("data-key") for i in range(4)]
    assert keys == ["cpu_percent", "rss_bytes", "requests_per_s", "restarts"]
    memory = page.locator('[data-testid=chart][data-key="rss_bytes"]')
    expect(memory.locator("path")).to_have_attribute("d", _line(), timeout=TICKS_MS)
    expect(memory.locator("[data-testid=chart-last]")).to_contain_text("MiB")
    expect(memory.locator(".scale")).to_contain_text("0–")
    cpu = page.locator('[data-testid=chart][data-key="cpu_percent"]')
    expect(cpu.locator("[data-testid=chart-last]")).to_contain_text("%", timeout=TICKS_MS)
    restarts = page.locator('[data-testid=chart][data-key="restarts"]')
    expect(restarts.locator("[data-testid=chart-last]")).to_have_text("0")
    expect(page.locator("[data-testid=charts] h2")).to_contain_text("one sample every 5 s")
    assert any(url.endswith("/api/v1/formations/alpha/history") for url in run.urls)
    assert not run.errors, run.errors


def _line() -> re.Pattern[str]:
    return re.compile(r"^M[\d.]+ [\d.]+L")


def test_a_hidden_page_fetches_no_history(run: Run) -> None:
    """Hidden (another tab), the page lets the `status` ticks pass without a fetch; shown
    again, it fetches at once."""
    page = run.page
    page.goto(f"{run.server.url}/ui/")
    expect(run.row("alpha").locator("[data-testid=spark] path")).to_have_attribute(
        "d", _line(), timeout=TICKS_MS
    )
    page.evaluate(
        "() => Object.defineProperty(document, 'hidden', {value: true, configurable: true})"
    )
    before = _history_fetches(run)
    uptime = page.evaluate("() => Alpine.$data(document.querySelector('.app')).status.uptime_s")
    # Two `status` ticks applied (5 s apart): each would have fetched on a visible page.
    page.wait_for_function(
        "(u) => Alpine.$data(document.querySelector('.app')).status.uptime_s > u + 6",
        arg=uptime,
        timeout=TICKS_MS,
    )
    assert _history_fetches(run) == before
    with page.expect_request(lambda r: "/api/v1/history?" in r.url, timeout=2000):
        page.evaluate(
            """() => {
              Object.defineProperty(document, 'hidden', {value: false, configurable: true});
              document.dispatchEvent(new Event('visibilitychange'));
            }"""
        )
    assert not run.errors, run.errors


def _history_fetches(run: Run) -> int:
    return sum("/api/v1/history?" in url for url in run.urls)

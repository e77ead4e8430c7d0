"""The tallies behind `/metrics` and their rendering, without a server: which events are
restarts and of what reason, histograms, bounded labels, forgetting deleted formations,
the format negotiation, `metrics.public` in config.yaml, and what the collectors write as
prometheus_client's parser reads it back. The proxy's upstream failures and retries are
counted on a bare app against a port nothing listens on."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from quart_trio import QuartTrio

from supervisor.http import proxy
from supervisor.http.metrics import negotiate
from supervisor.http.metrics_collectors import (
    BusCollector,
    FleetCollector,
    FormationFacts,
    Scrape,
    TallyCollector,
    facts_of,
)
from supervisor.http.proxy_hold import HoldGate
from supervisor.http.services import EXTENSION
from supervisor.http.upstream import UpstreamPool
from supervisor.runtime.events import EventBus
from supervisor.runtime.metrics import (
    Histogram,
    MeteredProbe,
    Metrics,
    code_label,
    method_label,
    restart_reason,
)
from supervisor.runtime.routing import Backend, RouteTable
from supervisor.storage.config import ConfigError, from_doc


def changed(to: str, reason: str) -> dict[str, str]:
    return {"to": to, "reason": reason}


@pytest.mark.parametrize(
    ("event", "data", "reason"),
    [
        ("formation_state_changed", changed("restarting", "exited"), "crash"),
        ("formation_state_changed", changed("restarting", "start_failed"), "crash"),
        ("formation_state_changed", changed("restarting", "unhealthy"), "health"),
        ("formation_state_changed", changed("restarting", "port_taken"), "health"),
        ("formation_state_changed", changed("starting", "restart"), "manual"),
        ("formation_updated", {"version": "2.0.0"}, "update"),
        ("formation_rolled_back", {"version": "1.0.0"}, "update"),
        # Not restarts: the start after a backoff (its restart was counted entering
        # `restarting`), a first start, a stop, a give-up, a health change.
        ("formation_state_changed", changed("starting", "backoff_elapsed"), None),
        ("formation_state_changed", changed("starting", "start"), None),
        ("formation_state_changed", changed("stopping", "restart"), None),
        ("formation_state_changed", changed("crashed", "gave_up"), None),
        ("formation_state_changed", changed("stopped", "exited"), None),
        ("formation_health_changed", {"healthy": False}, None),
    ],
)
def test_which_events_are_restarts_and_why(
    event: str, data: dict[str, str], reason: str | None
) -> None:
    assert restart_reason(event, data) == reason


def test_a_manual_restart_of_a_running_formation_is_counted_once() -> None:
    """Its stop goes through `stopping` for the reason `restart`; only the spawn counts."""
    metrics = Metrics()
    metrics.published("web", "formation_state_changed", changed("stopping", "restart"))
    metrics.published("web", "formation_state_changed", changed("starting", "restart"))
    metrics.published("web", "formation_state_changed", changed("running", "healthy"))
    assert metrics.formation("web").restarts == {"crash": 0, "health": 0, "manual": 1, "update": 0}


def test_a_histogram_is_cumulative_with_its_sum() -> None:
    histogram = Histogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(seconds)
    assert list(histogram.cumulative()) == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.total == pytest.approx(3.65)


def test_labels_are_bounded() -> None:
    assert [method_label(m) for m in ("GET", "PROPFIND", "get")] == ["GET", "other", "other"]
    assert [code_label(c) for c in (200, 599, 99, 600, 999)] == [
        "200",
        "599",
        "other",
        "other",
        "other",
    ]


def test_a_deleted_formations_tally_is_forgotten_once_nothing_of_it_is_in_flight() -> None:
    metrics = Metrics()
    metrics.formation("kept").held += 1
    metrics.formation("gone").held += 1
    metrics.formation("busy").in_flight += 1
    metrics.keep_only({"kept"})
    assert sorted(metrics.formations) == ["busy", "kept"]


def test_the_answer_format_follows_accept_and_survives_a_bad_one() -> None:
    assert negotiate("")[1] == CONTENT_TYPE_PLAIN_0_0_4
    assert negotiate("application/openmetrics-text; version=1.0.0")[1].startswith(
        "application/openmetrics-text; version=1.0.0"
    )
    # prometheus_client raised a TypeError on this one; a version it does not write
    # would have been echoed in the Content-Type.
    for odd in (
        "application/openmetrics-text; version=x",
        "application/openmetrics-text; version=9.9.9",
    ):
        assert negotiate(odd)[1] == CONTENT_TYPE_PLAIN_0_0_4


def test_metrics_public_is_a_boolean_setting() -> None:
    assert from_doc({"metrics": {"public": True}}, "config.yaml").metrics_public is True
    assert from_doc({}, "config.yaml").metrics_public is False
    for wrong in ("yes", 1, None):
        with pytest.raises(
            ConfigError, match="config.yaml: metrics.public: expected true or false"
        ):
            from_doc({"metrics": {"public": wrong}}, "config.yaml")


def test_the_collectors_write_what_the_parser_reads_back() -> None:
    metrics = Metrics()
    web = metrics.formation("web")
    web.in_flight += 2
    web.answered("GET", 200, 0.02)
    web.answered("MKCOL", 999, 2.0)
    web.upstream_error("connect")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TallyCollector(metrics))
    registry.register(BusCollector(EventBus()))
    fleet = [
        facts_of({"id": "web", "version": "1.2.0", "status": "running", "healthy": True}),
        FormationFacts("db", "", "crashed", False),
    ]
    text = generate_latest(Scrape(registry, FleetCollector(fleet, 3))).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for family in families.values():  # `_total` on counters, and only there
        for sample in family.samples:
            assert sample.name.endswith("_total") == (family.type == "counter"), sample.name
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert (
        samples[
            (
                "fsup_proxy_requests_total",
                (("code", "other"), ("formation", "web"), ("method", "other")),
            )
        ]
        == 1
    )
    assert samples[("fsup_proxy_requests_in_flight", (("formation", "web"),))] == 0
    assert (
        samples[
            ("fsup_proxy_request_duration_seconds_bucket", (("formation", "web"), ("le", "0.025")))
        ]
        == 1
    )
    assert (
        samples[("fsup_proxy_upstream_errors_total", (("formation", "web"), ("kind", "connect")))]
        == 1
    )
    assert samples[("fsup_formation_state", (("formation", "db"), ("state", "crashed")))] == 1
    assert samples[("fsup_formation_up", (("formation", "web"),))] == 1
    assert samples[("fsup_searches_running", ())] == 3
    # No process, no figures: a stopped or crashed formation has no start time.
    assert ("fsup_formation_start_time_seconds", (("formation", "db"),)) not in samples


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then closed without listening)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_refused_connection_is_counted_by_kind_and_its_retry_too() -> None:
    """A GET to a process that refuses: counted as a connect error, sent again (to the
    same process, which still runs: this test's own pid) up to the proxy's bound, each
    refusal counted; the 502 answered is the request's code, and nothing stays in flight."""
    routes, metrics = RouteTable(), Metrics()
    routes.register("web")
    routes.publish("web", Backend(unused_port(), os.getpid(), "1.0.0"))
    app = QuartTrio(__name__)
    async with UpstreamPool() as pool:  # noqa: SIM117 - the app needs the pool first
        app.extensions[EXTENSION] = SimpleNamespace(
            routes=routes, hold_gate=HoldGate(), proxy_client=pool, metrics=metrics
        )
        async with app.test_request_context("/api/web/x"):
            response, status = await proxy.proxy("web", "x")
    tally = metrics.formation("web")
    assert status == 502
    assert tally.upstream_errors["connect"] == proxy.MAX_ATTEMPTS
    assert tally.retries == proxy.MAX_ATTEMPTS - 1
    assert tally.requests == {("GET", "502"): 1}
    assert tally.in_flight == 0


class ScriptedProbe:
    """Answers each check with the next of `answers` (an exception is raised), or waits
    forever once they run out."""

    def __init__(self, *answers: str | None | Exception) -> None:
        self.answers = list(answers)
        self.closed = False

    async def check(self, port: int) -> str | None:
        if not self.answers:
            await trio.sleep_forever()
        answer = self.answers.pop(0)
        await trio.sleep(0.25)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


async def test_each_health_check_is_counted_by_result_with_its_duration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tally = Metrics().formation("web")
    inner = ScriptedProbe(None, "503", LookupError("a stranger on the port"))
    probe = MeteredProbe(inner, tally)
    assert await probe.check(8000) is None
    assert await probe.check(8000) == "503"
    with pytest.raises(LookupError):
        await probe.check(8000)
    with trio.move_on_after(1):  # cancelled half-way: not a check
        await probe.check(8000)
    assert tally.checks == {"ok": 1, "failed": 2}
    assert list(tally.check_duration.cumulative())[5:7] == [("0.1", 0), ("0.25", 3)]
    probe.close()
    assert inner.closed

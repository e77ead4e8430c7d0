"""Holding proxied requests while a formation comes back, on virtual time (no sockets)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from supervisor.http.proxy_hold import (
    HoldGate,
    find_route,
    hold_reason,
    retryable,
    wait_for_backend,
)
from supervisor.runtime.routing import SAFE_METHODS, Backend, RouteTable


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def table(coming_back: bool = True, hold_s: float = 5.0) -> RouteTable:
    routes = RouteTable()
    routes.register("web")
    routes.configure("web", hold_s, frozenset())
    routes.expect("web", coming_back)
    return routes


async def later(delay: float, action: object) -> None:
    await trio.sleep(delay)
    action()  # type: ignore[operator]


async def test_a_serving_route_answers_at_once() -> None:
    routes = table(coming_back=False)
    backend = Backend(8000, 1, "1.0.0")
    routes.publish("web", backend)
    route = routes.get("web")
    assert route is not None
    assert await wait_for_backend(routes, route, HoldGate(), 0) is backend
    assert route.figures.held == 0


async def test_a_held_request_goes_through_when_the_formation_is_back(
    clock: trio.testing.MockClock,
) -> None:
    routes, backend = table(), Backend(8001, 2, "1.0.0")
    route = routes.get("web")
    assert route is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(later, 0.3, lambda: routes.publish("web", backend))
        started = trio.current_time()
        assert await wait_for_backend(routes, route, HoldGate(), 0) is backend
        assert trio.current_time() - started == pytest.approx(0.3)
    figures = route.figures.to_json()
    assert (figures["held"], figures["served"], figures["expired"]) == (1, 1, 0)
    assert figures["wait_s"]["median"] == pytest.approx(0.3)


async def test_the_bound_passes(clock: trio.testing.MockClock) -> None:
    routes = table(hold_s=2.0)
    route = routes.get("web")
    assert route is not None
    started = trio.current_time()
    assert await wait_for_backend(routes, route, HoldGate(), 0) is None
    assert trio.current_time() - started == pytest.approx(2.0)
    assert (route.figures.held, route.figures.expired) == (1, 1)


async def test_a_formation_that_gives_up_releases_its_held_requests_at_once(
    clock: trio.testing.MockClock,
) -> None:
    routes = table(hold_s=10.0)
    route = routes.get("web")
    assert route is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(later, 0.5, lambda: routes.expect("web", False))  # crashed
        started = trio.current_time()
        assert await wait_for_backend(routes, route, HoldGate(), 0) is None
        assert trio.current_time() - started == pytest.approx(0.5)


async def test_a_deleted_formation_releases_its_held_requests(
    clock: trio.testing.MockClock,
) -> None:
    routes = table()
    route = routes.get("web")
    assert route is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(later, 0.2, lambda: routes.remove("web"))
        assert await wait_for_backend(routes, route, HoldGate(), 0) is None
        assert trio.current_time() == pytest.approx(0.2)


async def test_a_failed_backend_is_skipped_until_another_serves(
    clock: trio.testing.MockClock,
) -> None:
    """Its actor has not seen the exit yet: the dead backend is still published."""
    routes, dead, fresh = table(coming_back=False), Backend(8000, 1, "1"), Backend(8000, 3, "1")
    routes.publish("web", dead)
    route = routes.get("web")
    assert route is not None

    def comes_back() -> None:
        routes.publish("web", None)
        routes.expect("web", True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later, 0.01, comes_back)
        nursery.start_soon(later, 0.2, lambda: routes.publish("web", fresh))
        assert await wait_for_backend(routes, route, HoldGate(), 0, failed=dead) is fresh
        assert trio.current_time() == pytest.approx(0.2)


async def test_the_gate_bounds_held_requests_and_bytes(clock: trio.testing.MockClock) -> None:
    routes, gate = table(hold_s=1.0), HoldGate(max_requests=2, max_bytes=100)
    route = routes.get("web")
    assert route is not None
    results: list[float] = []

    async def hold(size: int) -> None:
        started = trio.current_time()
        assert await wait_for_backend(routes, route, gate, size) is None
        results.append(trio.current_time() - started)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, 10)
        nursery.start_soon(hold, 10)
        await trio.testing.wait_all_tasks_blocked()
        assert (gate.requests, gate.bytes) == (2, 20)
        nursery.start_soon(hold, 0)  # a third: refused at once
        await trio.testing.wait_all_tasks_blocked()
        assert results == [0.0]
    assert sorted(results) == [0.0, 1.0, 1.0]
    assert (gate.requests, gate.bytes) == (0, 0)
    big = HoldGate(max_requests=10, max_bytes=100)
    assert await wait_for_backend(routes, route, big, 101) is None  # over the byte bound


@pytest.mark.parametrize(
    ("method", "declared", "body", "expected"),
    [
        ("GET", frozenset(), b"", True),
        ("HEAD", frozenset(), b"", True),
        ("OPTIONS", frozenset(), b"", True),
        ("POST", frozenset(), b"", False),
        ("PUT", frozenset({"PUT"}), b"x", True),
        ("PUT", frozenset({"PUT"}), None, False),  # streamed: not in hand
        ("DELETE", frozenset({"PUT"}), b"", False),
    ],
)
def test_what_is_retried(
    method: str, declared: frozenset[str], body: bytes | None, expected: bool
) -> None:
    routes = table()
    routes.configure("web", 5.0, declared)
    route = routes.get("web")
    assert route is not None and SAFE_METHODS <= route.idempotent
    assert retryable(method, route, body) is expected


def test_summary_counts_holding() -> None:
    routes = table()
    route = routes.get("web")
    assert route is not None
    route.figures.held, route.figures.served, route.figures.retried = 3, 2, 1
    route.figures.waits.extend([0.1, 0.2, 0.3])
    holding = routes.summary(0.0)["holding"]
    assert holding["held"] == 3 and holding["served"] == 2 and holding["retried"] == 1
    assert holding["wait_s"] == {"median": 0.2, "p99": 0.3}


# -- fsup's own restore, what a released request is told, retired ports ----------------------


async def test_during_the_restore_an_unknown_formation_is_waited_for(
    clock: trio.testing.MockClock,
) -> None:
    routes, backend = RouteTable(restoring=True), Backend(8002, 4, "1.0.0")
    gate = HoldGate()

    def restore() -> None:
        routes.register("web")  # the fleet registers, then the actor publishes
        routes.publish("web", backend)
        routes.restored()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later, 0.4, restore)
        route = await find_route(routes, "web", gate, 0, 5.0)
        assert route is not None and trio.current_time() == pytest.approx(0.4)
        assert await wait_for_backend(routes, route, gate, 0) is backend


async def test_after_the_restore_an_unknown_formation_is_not_waited_for(
    clock: trio.testing.MockClock,
) -> None:
    routes = RouteTable(restoring=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(later, 0.3, routes.restored)
        assert await find_route(routes, "nobody", HoldGate(), 0, 5.0) is None
        assert trio.current_time() == pytest.approx(0.3)
    assert await find_route(routes, "nobody", HoldGate(), 0, 5.0) is None  # at once now
    assert trio.current_time() == pytest.approx(0.3)


async def test_a_restore_that_outlasts_the_bound_is_said_so(
    clock: trio.testing.MockClock,
) -> None:
    routes = RouteTable(restoring=True)
    assert await find_route(routes, "web", HoldGate(), 0, 2.0) is None
    assert trio.current_time() == pytest.approx(2.0)
    why = hold_reason(routes, None, trio.current_time())
    assert (why.kind, why.retry_after_s) == ("restoring", 1)
    # A route registered but not yet fed by its actor is held while the restore lasts.
    routes.register("web")
    route = routes.get("web")
    assert route is not None and not route.coming_back
    async with trio.open_nursery() as nursery:
        nursery.start_soon(later, 0.5, routes.restored)
        started = trio.current_time()
        assert await wait_for_backend(routes, route, HoldGate(), 0) is None
        assert trio.current_time() - started == pytest.approx(0.5)


def test_what_a_released_request_is_told() -> None:
    routes = table()
    route = routes.get("web")
    assert route is not None
    why = hold_reason(routes, route, 10.0)
    assert (why.kind, why.retry_after_s) == ("gate", 1)
    routes.backoff("web", until=17.2, restarts=4)
    why = hold_reason(routes, route, 10.0)
    assert (why.kind, why.retry_after_s) == ("backoff", 8)  # 7.2 s left, rounded up
    assert "7.2s more" in why.message and "4 exits" in why.message
    assert hold_reason(routes, route, 20.0).kind == "gate"  # the backoff is over
    routes.expect("web", False)
    why = hold_reason(routes, route, 20.0)
    assert (why.kind, why.retry_after_s) == ("stopped", None)


def test_retired_ports_are_reported_on_withdrawal_swap_and_removal() -> None:
    retired: list[int] = []
    routes = RouteTable(retired=retired.append)
    routes.register("web")
    old, new = Backend(8000, 1, "1"), Backend(8001, 2, "2")
    routes.publish("web", old)
    assert retired == []
    routes.publish("web", new)  # an update's swap
    assert retired == [8000]
    routes.publish("web", new)  # the same backend again: nothing retired
    routes.publish("web", None)  # stopped or restarting
    assert retired == [8000, 8001]
    routes.publish("web", old)
    routes.remove("web")  # deleted
    assert retired == [8000, 8001, 8000]

"""HTTP handlers called alone: each is a module-level function that reaches the server only
through the app's services (`services()`), so a test gives it a bare app holding the few
fakes it uses (an actor that records what it is asked, a store, a routing table), and a
request context, and calls it. The factories are checked the same way: a bare app with one
Blueprint routes to the module's handlers, behind that Blueprint's auth hook."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from quart import Blueprint, Response
from quart_trio import QuartTrio

from actors.base import ActorCrashed, ActorUnavailable
from actors.fleet import Delete
from actors.search import CreateSearch, ListSearches
from supervisor.core.errors import FsupError
from supervisor.http import error_handlers, fleet_api, hooks, proxy, rpc, searches
from supervisor.http.proxy_hold import HoldGate
from supervisor.http.services import EXTENSION
from supervisor.runtime.metrics import Metrics
from supervisor.runtime.routing import RouteTable

TOKEN = "ab" * 32


class FakeActor:
    """An actor reference that records each message and answers with `answer` (or raises
    `error`)."""

    def __init__(self, answer: Any = None, error: Exception | None = None) -> None:
        self.name = "fake"
        self.asked: list[Any] = []
        self.answer = answer
        self.error = error

    async def ask(self, message: Any) -> Any:
        self.asked.append(message)
        if self.error is not None:
            raise self.error
        return self.answer


class FakeStore:
    def __init__(self) -> None:
        self.tails: list[int] = []

    def audit_tail(self, count: int) -> list[dict[str, Any]]:
        self.tails.append(count)
        return [{"method": "POST"}] * count


def bare_app(**services: Any) -> QuartTrio:
    """An app with nothing but the services the handler under test reaches."""
    app = QuartTrio(__name__)
    app.extensions[EXTENSION] = SimpleNamespace(**services)
    return app


async def body_of(answer: Any) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a handler's `(Response, status)` answer."""
    response, status = answer
    assert isinstance(response, Response)
    return status, json.loads(await response.get_data())


async def test_create_search_asks_the_actor_with_the_checked_fields() -> None:
    actor = FakeActor(answer={"id": "s1"})
    app = bare_app(searches=actor)
    body = b'{"keyword": " rust ", "autostart": true}'
    async with app.test_request_context("/api/v1/searches", method="POST", data=body):
        assert await searches.create_search() == ({"id": "s1"}, 201)
    assert actor.asked == [CreateSearch("rust", "full", True)]


async def test_a_field_a_search_does_not_take_is_refused_before_the_actor_is_asked() -> None:
    actor = FakeActor()
    app = bare_app(searches=actor)
    async with app.test_request_context("/api/v1/searches/s1", method="PATCH", data=b'{"m": 1}'):
        with pytest.raises(FsupError) as info:
            await searches.patch_search("s1")
    assert (info.value.code, info.value.details) == ("INVALID_REQUEST", {"field": "m"})
    assert actor.asked == []


async def test_a_searches_actor_that_crashed_is_an_internal_error_that_says_retry() -> None:
    app = bare_app(searches=FakeActor(error=ActorCrashed("boom")))
    async with app.test_request_context("/api/v1/searches"):
        with pytest.raises(FsupError) as info:
            await searches.list_searches()
    assert info.value.code == "INTERNAL" and "retry" in info.value.message


async def test_delete_asks_the_fleet_and_answers_what_it_says() -> None:
    fleet = FakeActor(answer={"deleted": "web"})
    app = bare_app(fleet=fleet)
    async with app.test_request_context("/rpc/formations/web", method="DELETE"):
        assert await rpc.delete("web") == {"deleted": "web"}
    assert fleet.asked == [Delete("web")]


async def test_a_fleet_that_is_gone_is_a_503_naming_it() -> None:
    app = bare_app(fleet=FakeActor(error=ActorUnavailable("stopped")))
    async with app.test_request_context("/rpc/formations/web", method="DELETE"):
        with pytest.raises(FsupError) as info:
            await rpc.delete("web")
    assert info.value.code == "FORMATION_UNAVAILABLE" and info.value.status == 503
    assert "fake is unavailable" in info.value.message


async def test_the_audit_log_reads_as_many_entries_as_asked() -> None:
    store = FakeStore()
    app = bare_app(store=store)
    async with app.test_request_context("/rpc/server/logs", query_string={"limit": "3"}):
        answer = await rpc.audit_log()
    assert store.tails == [3] and len(answer["entries"]) == 3


@pytest.mark.parametrize(
    ("factory", "path", "endpoint", "handler"),
    [
        (rpc.blueprint, "/rpc/formations/web", "rpc.", rpc.lifecycle),
        (fleet_api.blueprint, "/api/v1/formations/web", "fleet_api.api_", fleet_api.api_lifecycle),
    ],
)
def test_each_lifecycle_route_gives_its_action_to_the_one_handler(
    factory: Callable[[], Blueprint], path: str, endpoint: str, handler: Any
) -> None:
    """The action is the rule's default (no closure per action): each lifecycle route of
    `/rpc` and `/api/v1` reaches its family's one handler with it, under its own endpoint."""
    app = QuartTrio(__name__)
    app.register_blueprint(factory())
    urls = app.url_map.bind("localhost")
    for action in rpc.LIFECYCLE:
        found, args = urls.match(f"{path}/{action}", "POST")
        assert (found, args) == (f"{endpoint}{action}", {"formation_id": "web", "action": action})
        assert app.view_functions[found] is handler


async def test_the_searches_blueprint_puts_its_handlers_behind_the_bearer_token() -> None:
    actor = FakeActor(answer=[{"id": "s1"}])
    app = bare_app(searches=actor, api_token=TOKEN)
    error_handlers.install_error_handlers(app)
    app.register_blueprint(searches.blueprint())
    client = app.test_client()
    refused = await client.get("/api/v1/searches")
    assert refused.status_code == 401 and actor.asked == []
    answered = await client.get("/api/v1/searches", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answered.status_code == 200
    assert await answered.get_json() == {"searches": [{"id": "s1"}]}
    assert actor.asked == [ListSearches()]


async def test_too_large_names_the_configured_limit() -> None:
    app = bare_app(config=SimpleNamespace(max_body_bytes=10))
    async with app.test_request_context("/rpc/formations", method="POST"):
        status, body = await body_of(await error_handlers.too_large(Exception()))
    assert status == 413
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert body["error"]["details"] == {"limit_bytes": 10}


@pytest.mark.parametrize(
    ("path", "cached"), [("/api/v1/auth/bootstrap", "no-store"), ("/api/v1/health", None)]
)
async def test_no_store_marks_only_the_answers_that_carry_a_credential(
    path: str, cached: str | None
) -> None:
    app = bare_app()
    async with app.test_request_context(path):
        response = await hooks.no_store(Response("{}"))
    assert response.headers.get("Cache-Control") == cached


def proxy_app(routes: RouteTable, gate: HoldGate | None = None) -> QuartTrio:
    return bare_app(
        routes=routes, hold_gate=gate or HoldGate(), proxy_client=None, metrics=Metrics()
    )


async def test_the_proxy_answers_404_for_a_formation_it_does_not_know() -> None:
    app = proxy_app(RouteTable())
    async with app.test_request_context("/api/ghost/x"):
        status, body = await body_of(await proxy.proxy("ghost", "x"))
    assert (status, body["error"]["code"]) == (404, "FORMATION_NOT_FOUND")


async def test_the_proxy_answers_503_at_once_for_a_stopped_formation() -> None:
    routes = RouteTable()
    routes.register("web")
    app = proxy_app(routes)
    async with app.test_request_context("/api/web/x"):
        status, body = await body_of(await proxy.proxy("web", "x"))
    assert (status, body["error"]["code"]) == (503, "FORMATION_NOT_RUNNING")


async def test_the_proxy_holds_no_request_past_the_apps_hold_gate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While fsup restores its formations a request for one not registered yet is held; the
    app's gate (from its services, not the Blueprint's) being full, it is answered at once."""
    app = proxy_app(RouteTable(restoring=True), HoldGate(max_requests=0))
    began = trio.current_time()
    async with app.test_request_context("/api/web/x"):
        status, body = await body_of(await proxy.proxy("web", "x"))
    assert trio.current_time() == began
    assert (status, body["error"]["code"]) == (503, "FORMATION_NOT_RUNNING")

"""The Quart-Trio application, composed: settings and services, the app's own hooks
(`hooks`), the contract's errors (`error_handlers`), and each family's Blueprint.

Handlers hold no state of their own and never touch a process: they validate the request,
send a message to an actor, and render the answer (JSON, or SSE for progress streams). What
they reach (the fleet, the store, the routing table, the bus...) is the app's `HttpServices`
(`services()`), stored here once: a handler is a module-level function that can be called
alone inside any app built by `create_app`.

Before any Blueprint's hook or handler, the app's own hooks check what every route relies
on: the head's framing and size (`request_guard`), the `Host` of a browser-reachable route
(`core.hosts`, against DNS rebinding), and credential headers given once. A WebSocket gets
a clear 400 from fsup's own routes, and no error handler reads `request` where a WebSocket
has none.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart.wrappers import BaseRequestWebsocket
from quart_trio import QuartTrio
from werkzeug.exceptions import BadHost
from werkzeug.routing import MapAdapter

from supervisor.http import (
    api_v1,
    dashboard,
    faults,
    fleet_api,
    history_api,
    metrics,
    openapi,
    operations_api,
    proxy,
    rpc,
    searches,
    server_api,
    session_api,
)
from supervisor.http.error_handlers import install_error_handlers
from supervisor.http.hooks import install_hooks
from supervisor.http.services import EXTENSION, HttpServices

# The longest a request body may take to arrive (100 MB at under 1 MB/s is refused with 408).
BODY_TIMEOUT_S = 120


# The router's server name for a request whose Host werkzeug cannot encode (`FsupApp`).
UNROUTABLE_HOST = "host.invalid"


class FsupApp(QuartTrio):
    """Quart-Trio, with routing that survives any `Host`."""

    def create_url_adapter(self, request: BaseRequestWebsocket | None) -> MapAdapter | None:
        """Werkzeug binds the router to the request's Host, IDNA-encoded; a Host it cannot
        encode (an empty label, `a..b`; a label over 63 characters) raised `BadHost` while
        the request context was made, before any handler or hook: a 500 with a traceback,
        on every route, `/health` included. Such a request is routed without the Host
        (fsup builds no absolute URL from it); the Host check refuses it on fsup's own
        named routes, and the proxy passes it on as it came."""
        try:
            return super().create_url_adapter(request)
        except BadHost:
            if request is None:
                raise
            return self.url_map.bind(
                UNROUTABLE_HOST,
                request.root_path,
                None,
                request.scheme,
                request.method,
                request.path,
                request.query_string.decode("latin-1"),
            )


def create_app(services: HttpServices) -> QuartTrio:
    """The app for `services`, step by step. The hooks come before the Blueprints: the
    dashboard's after-request hook, registered with its Blueprint, then runs before the
    app's `answered` (Quart runs after-request hooks last registered first)."""
    app = FsupApp("fsup")
    configure(app, services)
    register_public_routes(app)
    install_hooks(app)
    install_error_handlers(app)
    register_blueprints(app)
    return app


def configure(app: QuartTrio, services: HttpServices) -> None:
    """The app's limits, the services its handlers reach (`services()`), and the
    collectors of its `/metrics` registry."""
    # `//` in a path is not redirected (a 308 to an HTML page is not the contract's answer):
    # fsup's routes then answer 404, the proxy passes it on to the formation as it came.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = services.config.max_body_bytes
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT_S
    app.extensions[EXTENSION] = services
    metrics.register_collectors(services)


async def health() -> Any:
    return {"status": "healthy"}


async def ping() -> Any:
    return {"message": "pong"}


def register_public_routes(app: QuartTrio) -> None:
    """`/health` and `/ping`: no auth, no Blueprint (`early` answers the same bodies while
    the server loads)."""
    app.get("/health")(health)
    app.get("/ping")(ping)


def blueprints() -> list[Blueprint]:
    """Every family's Blueprint, in the order they are registered; the fault route's only in
    a server started for fault tests."""
    found = [
        openapi.blueprint(),
        rpc.blueprint(),
        faults.blueprint(),
        searches.blueprint(),
        operations_api.blueprint(),
        fleet_api.blueprint(),
        history_api.blueprint(),
        server_api.blueprint(),
        session_api.blueprint(),
        dashboard.blueprint(),
        api_v1.blueprint(),
        metrics.blueprint(),
        proxy.blueprint(),
    ]
    return [blueprint for blueprint in found if blueprint is not None]


def register_blueprints(app: QuartTrio) -> None:
    for blueprint in blueprints():
        app.register_blueprint(blueprint)

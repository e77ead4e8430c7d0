"""What a handler reaches: one typed object on the app, instead of string-keyed extensions.

`create_app` stores it once; handlers call `services()`. The fields are the runtime's
(`operations.Services`: the fleet actor, home, config, routes, store, bus) plus what only the
HTTP edge needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CollectorRegistry
from quart import current_app

from supervisor.http.process_watch import ProcessWatch
from supervisor.http.proxy_hold import HoldGate
from supervisor.operations import Services
from supervisor.runtime.history import History
from supervisor.runtime.log_keeper import LogKeeper
from supervisor.runtime.metrics import Metrics

if TYPE_CHECKING:
    from actors.base import ActorRef
    from supervisor.core.hmac_auth import Credentials
    from supervisor.http.sessions import RevokedSessions
    from supervisor.http.upstream import UpstreamPool
    from supervisor.runtime.logs import LogBook

EXTENSION = "fsup"


@dataclass
class HttpServices(Services):
    credentials: Credentials
    server_id: str
    proxy_client: UpstreamPool
    api_token: str  # `/api/v1`'s bearer token (sessions are derived from it)
    searches: ActorRef | None  # the searches actor (None in app-only tests)
    log_book: LogBook | None  # the server's own log records, paged (None in app-only tests)
    # Logged-out sessions (`sessions.py`), made on first use from `home` when not given.
    revoked: RevokedSessions | None = None
    # The server-wide bound on the proxy's held requests (`proxy_hold`), one per app.
    hold_gate: HoldGate = field(default_factory=HoldGate)
    # The processes whose figures the API reports, watched between calls (one per app).
    process_watch: ProcessWatch = field(default_factory=ProcessWatch)
    # What the proxy and the formations tally (shared with the formation actors' context).
    metrics: Metrics = field(default_factory=Metrics)
    # `/metrics`' collectors, one registry per app (never prometheus_client's global one:
    # tests run several apps in one process); `http.metrics` fills it when the app is made.
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(False))
    # Each formation's last hour of figures (kept by the telemetry tick, read by the charts).
    history: History = field(default_factory=History)
    # The home's log keeper, as the status answers show it (None in app-only tests).
    log_keeper: LogKeeper | None = None


def keeper_state() -> dict[str, Any]:
    """`log_keeper` for a status answer: whether the output is stamped by the keeper, or
    goes to the legacy files and why (nothing in app-only tests)."""
    keeper = services().log_keeper
    return {} if keeper is None else {"log_keeper": keeper.state()}


def services() -> HttpServices:
    """The app's services, inside a request or app context."""
    return cast(HttpServices, current_app.extensions[EXTENSION])

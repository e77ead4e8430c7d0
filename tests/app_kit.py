"""The Quart app alone, without a fleet or a server: for tests of routing, auth hooks and the
OpenAPI document that need no actor (handlers that ask one are not called)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from quart_trio import QuartTrio

from supervisor.core.hmac_auth import Credentials
from supervisor.http.app import create_app
from supervisor.http.services import HttpServices
from supervisor.http.upstream import UpstreamPool
from supervisor.runtime.events import EventBus
from supervisor.runtime.routing import RouteTable
from supervisor.storage.config import ServerConfig
from supervisor.storage.home import Home
from supervisor.storage.store import Store


@asynccontextmanager
async def open_bare_app(home: Path, api_token: str) -> AsyncIterator[QuartTrio]:
    store = Store(home / "state.db")
    try:
        async with UpstreamPool() as pool:
            services = HttpServices(
                None,  # type: ignore[arg-type]  # no fleet: nothing here asks it
                Home(home),
                ServerConfig(),
                RouteTable(),
                store,
                EventBus(),
                credentials=Credentials("k", "s"),
                server_id="server",
                proxy_client=pool,
                api_token=api_token,
                searches=None,
                log_book=None,
            )
            yield create_app(services)
    finally:
        store.close()

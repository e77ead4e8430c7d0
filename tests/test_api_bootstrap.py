"""The token bootstrap answers loopback peers only, judged by the socket address."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from supervisor.core.hmac_auth import Credentials
from supervisor.http.app import create_app
from supervisor.http.services import HttpServices
from supervisor.runtime.events import EventBus
from supervisor.runtime.routing import RouteTable
from supervisor.storage.config import ServerConfig
from supervisor.storage.home import Home
from supervisor.storage.store import Store

TOKEN = "ab" * 32


@pytest.fixture
async def app(tmp_path: Path) -> Any:
    store = Store(tmp_path / "state.db")
    async with httpx.AsyncClient() as proxy_client:
        services = HttpServices(
            None,  # type: ignore[arg-type]
            Home(tmp_path),
            ServerConfig(),
            RouteTable(),
            store,
            EventBus(),
            credentials=Credentials("k", "s"),
            server_id="server",
            proxy_client=proxy_client,
            api_token=TOKEN,
            searches=None,
            log_book=None,
        )
        yield create_app(services)
    store.close()


@pytest.mark.parametrize(
    ("peer", "forwarded", "status"),
    [
        ("127.0.0.1", None, 200),
        ("::1", None, 200),
        ("203.0.113.9", None, 403),
        ("203.0.113.9", "127.0.0.1", 403),  # a forwarded header never makes a peer local
        ("127.0.0.1", "203.0.113.9", 200),  # nor a local peer remote
    ],
)
async def test_bootstrap_is_for_loopback_peers(
    app: Any, peer: str, forwarded: str | None, status: int
) -> None:
    client = app.test_client()
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    response = await client.get(
        "/api/v1/auth/bootstrap", headers=headers, scope_base={"client": (peer, 50000)}
    )
    assert response.status_code == status
    body = await response.get_json()
    if status == 200:
        assert body == {"token": TOKEN}
    else:
        assert body["error"]["code"] == "FORBIDDEN" and TOKEN not in str(body)

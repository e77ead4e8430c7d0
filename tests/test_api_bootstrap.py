"""The token bootstrap answers loopback peers only, judged by the socket address."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from app_kit import open_bare_app

TOKEN = "ab" * 32


@pytest.fixture
async def app(tmp_path: Path) -> Any:
    async with open_bare_app(tmp_path, TOKEN) as app:
        yield app


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

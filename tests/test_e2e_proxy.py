"""End-to-end: the reverse proxy `/api/{id}/*` in front of real formations."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest
from helpers import Server, nasty_bundle

pytestmark = pytest.mark.e2e


def test_proxy_passes_method_path_query_headers_and_body(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("echo"))
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as http:
        got = http.get("/api/echo/some/path%20x?a=1&b=two%20words", headers={"X-Custom": "yes"})
        assert got.status_code == 200
        seen = got.json()
        assert seen["path"] == "/some/path%20x?a=1&b=two%20words"
        headers = {k.lower(): v for k, v in seen["headers"].items()}
        assert headers["x-custom"] == "yes"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-host"] == server.url.removeprefix("http://")
        assert headers["x-formation-id"] == "echo"

        body = os.urandom(1024 * 1024)
        posted = http.post("/api/echo/upload", content=body).json()
        assert posted["length"] == len(body)
        assert posted["sha256"] == hashlib.sha256(body).hexdigest()
        assert {k.lower(): v for k, v in posted["headers"].items()}["content-length"] == str(len(body))

        assert http.get("/api/echo").json()["path"] == "/"


def test_proxy_errors(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("quiet", "silent", health={}))
    server.rpc.deploy(nasty_bundle("paused"))
    server.rpc.call("POST", "/rpc/formations/paused/stop")
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as http:
        missing = http.get("/api/nobody/x")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "FORMATION_NOT_FOUND"
        stopped = http.get("/api/paused/x")
        assert stopped.status_code == 503
        assert stopped.json()["error"]["code"] == "FORMATION_NOT_RUNNING"
        refused = http.get("/api/quiet/x")  # running, but nothing listens on its port
        assert refused.status_code == 502
        assert refused.json()["error"]["code"] == "BAD_GATEWAY"

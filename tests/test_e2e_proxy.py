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
        assert {k.lower(): v for k, v in posted["headers"].items()}["content-length"] == str(
            len(body)
        )

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


class _Canary:
    """A loopback HTTP server that counts the requests it gets (it must get none)."""

    def __init__(self) -> None:
        import http.server
        import threading

        hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"canary")

            def log_message(self, *args: object) -> None:
                pass

        self.hits = hits
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_proxy_reaches_only_the_formations_own_port(server: Server) -> None:
    server.rpc.deploy(nasty_bundle("echo"))
    token = httpx.get(f"{server.url}/api/v1/auth/bootstrap", trust_env=False).json()["token"]
    fsup = server.url.removeprefix("http://")
    canary = _Canary()
    try:
        attempts = [
            f"/api/echo%2F@127.0.0.1:{canary.port}/x",
            f"/api/echo%2f@127.0.0.1:{canary.port}/x",
            f"/api/echo%2F@{fsup}/api/v1/auth/bootstrap",
            f"/api/echo%40127.0.0.1:{canary.port}/x",
            f"/api/%65cho%2F@127.0.0.1:{canary.port}/x",
            f"/api/echo%252F@127.0.0.1:{canary.port}/x",
        ]
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as http:
            for path in attempts:
                answer = http.get(httpx.URL(server.url, raw_path=path.encode()))
                assert answer.status_code == 400, (path, answer.text)
                assert answer.json()["error"]["code"] == "INVALID_REQUEST"
                assert token not in answer.text
            # Odd but unambiguous paths reach the formation itself, as sent.
            for path in [
                f"/api/echo/%2F@127.0.0.1:{canary.port}/x",
                f"/api/echo//127.0.0.1:{canary.port}/x",
            ]:
                answer = http.get(httpx.URL(server.url, raw_path=path.encode()))
                assert answer.status_code == 200
                # (the stdlib server of the fixture folds a leading "//" into "/")
                assert answer.json()["path"].lstrip("/") == path.removeprefix("/api/echo/").lstrip(
                    "/"
                )
            assert canary.hits == []
    finally:
        canary.close()


def test_proxied_answers_carry_one_date_and_one_server_header(server: Server) -> None:
    import socket

    server.rpc.deploy(nasty_bundle("echo"))
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /api/echo/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
    names = [line.split(b":", 1)[0] for line in head[1:]]
    assert names.count(b"date") == 1 and names.count(b"server") == 1, head
    assert names.count(b"connection") <= 1

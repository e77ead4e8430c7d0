"""A small synchronous client for fsup's `/rpc` API: HMAC signing and SSE parsing, written once.

The tests drive the server through it, and the CLI is built on it. It signs exactly the bytes
it sends: the path and query as they go on the wire, and the raw body.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from supervisor.core import muxi_hmac
from supervisor.core.hmac_auth import MUXI_HMAC, SIGNED_HEADERS, signed_headers


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: Any
    id: str | None = None


class ApiError(Exception):
    """The server answered with the contract's error shape."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Events from an SSE line stream (comments skipped, multi-line data joined)."""
    event, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = text
                yield SseEvent(event, payload, event_id)
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


class RpcClient:
    """`scheme`: how requests are signed, the seed's X-MUXI-* headers (signed-headers) or
    MUXI's `Authorization: MUXI-HMAC` (muxi-hmac, as MUXI's own CLI and SDKs sign)."""

    def __init__(
        self,
        url: str,
        key_id: str,
        secret_key: str,
        timeout: float = 60.0,
        scheme: str = SIGNED_HEADERS,
    ) -> None:
        self.url = url.rstrip("/")
        self.key_id = key_id
        self.secret_key = secret_key
        self.scheme = scheme
        self._http = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def build(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> httpx.Request:
        """A signed request; `path` may carry a query string, signed as written."""
        wire_path = (urlsplit(self.url).path.rstrip("/") + path).encode()
        auth = (
            {
                "Authorization": muxi_hmac.authorization(
                    self.key_id, self.secret_key, method, wire_path
                )
            }
            if self.scheme == MUXI_HMAC
            else signed_headers(self.key_id, self.secret_key, method, wire_path, body)
        )
        request = self._http.build_request(
            method, path, content=body, headers={**auth, **(headers or {})}
        )
        return request

    def send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        return self._http.send(request, stream=stream)

    def call(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Any:
        """Send a signed request; return the JSON answer or raise `ApiError`."""
        response = self.send(self.build(method, path, body, headers))
        return decode(response)

    def stream(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Iterator[SseEvent]:
        """Send a signed request asking for SSE; yield its events until the stream ends."""
        request = self.build(method, path, body, {**(headers or {}), "Accept": "text/event-stream"})
        response = self.send(request, stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                decode(response)
            yield from parse_sse(response.iter_lines())
        finally:
            response.close()

    def deploy(self, bundle: bytes, content_type: str = "application/gzip") -> Any:
        return self.call("POST", "/rpc/formations/deploy", bundle, {"Content-Type": content_type})


def decode(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        error = (body or {}).get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            raise ApiError(
                response.status_code,
                error.get("code", "?"),
                error.get("message", ""),
                error.get("details") or {},
            )
        raise ApiError(response.status_code, "HTTP_ERROR", response.text[:500], {})
    return body


class ApiClient:
    """The `/api/v1` side: the bearer token from the loopback bootstrap, a session cookie for
    the event stream."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/api/v1", timeout=timeout, trust_env=False
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def login(self) -> None:
        token = decode(self._http.get("/auth/bootstrap"))["token"]
        self._http.headers["Authorization"] = f"Bearer {token}"
        decode(self._http.post("/session"))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return decode(self._http.request(method, path, json=body))

    @contextmanager
    def open_events(self) -> Iterator[Iterator[SseEvent]]:
        """The event stream, open (subscribed on the server) when the block starts."""
        with self._http.stream("GET", "/events", timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                decode(response)
            yield parse_sse(response.iter_lines())

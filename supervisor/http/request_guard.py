"""Checks on a request's head that no route should have to repeat.

They run before authentication and before any body byte is read, on every request:

- Framing that two readers could disagree on: `Content-Length` together with
  `Transfer-Encoding` is the classic request-smuggling shape (RFC 9112 6.1 lets a server
  refuse it and requires closing the connection either way). It is refused with 400 and the
  connection is closed, so nothing left in the socket is read as a next request.
- A head too large to be a client's honest one. h11 bounds a head that arrives over several
  reads (16 KiB), but not one that arrives complete in a single read (up to 64 KiB): the
  same limits are applied here, counted in headers and bytes.
- fsup's own routes (`/rpc/*`, `/api/v1/*`, ...) take each query parameter at most once: with
  two values, one check could read the first and a handler the last. The proxy's query is the
  formation's business and is passed on untouched.
- `/rpc` paths with an encoded slash (`%2F`): the router decodes before matching, so
  `/rpc/formations/a%2Fstop` would reach the `stop` route. No fsup id contains a slash.
"""

from __future__ import annotations

from quart import request

from supervisor.core.doors import Door, door_of
from supervisor.core.errors import FsupError

MAX_HEADERS = 100
MAX_HEAD_BYTES = 16 * 1024


def check_head() -> None:
    """Raise an `FsupError` (with `close` set where the connection must not be reused)."""
    _check_framing()
    _check_size()
    door = door_of(request.path)
    if door is Door.PROXIED:
        return
    _check_query()
    if door is Door.RPC:
        _check_rpc_path()


def _check_framing() -> None:
    headers = request.headers
    if "transfer-encoding" in headers and "content-length" in headers:
        raise FsupError(
            "INVALID_REQUEST",
            "a request may carry Content-Length or Transfer-Encoding, not both; send one of them",
            {"headers": ["Content-Length", "Transfer-Encoding"]},
        )


def _check_size() -> None:
    items = list(request.headers.items())
    size = sum(len(name) + len(value) + 4 for name, value in items)
    if len(items) > MAX_HEADERS or size > MAX_HEAD_BYTES:
        raise FsupError(
            "INVALID_REQUEST",
            f"the request has {len(items)} headers in {size} bytes; the limit is "
            f"{MAX_HEADERS} headers in {MAX_HEAD_BYTES} bytes",
            {"max_headers": MAX_HEADERS, "max_head_bytes": MAX_HEAD_BYTES},
            status=431,
        )


def _check_query() -> None:
    args = request.args
    for name in args:
        if len(args.getlist(name)) > 1:
            raise FsupError(
                "INVALID_REQUEST",
                f"query parameter {name!r} is given more than once; give it once",
                {"parameter": name},
            )


def _check_rpc_path() -> None:
    raw = request.scope.get("raw_path") or b""
    if b"%2f" in raw.lower():
        raise FsupError(
            "INVALID_REQUEST",
            "an encoded slash (%2F) is not allowed in a /rpc path; ids never contain one",
            {"path": request.path[:200]},
        )

"""Where a proxied request goes: parsed from the raw request target, built from parts.

The proxy must reach nothing but `127.0.0.1:<the formation's port>`, however the client encodes
its path. So the formation id is cut from the raw bytes (never from a decoded path, where
`%2F` has already become a separator), percent-decoded once and compared decoded; an id whose
decoding is ambiguous (an encoded slash, a second round of encoding) is refused. The upstream
URL is assembled from scheme, host, port and a path that always begins with `/`: no string
concatenation can turn the rest of the path into a user-info part or another host.
Pure functions: no I/O, tested on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httpx

from supervisor.core.errors import FsupError

PREFIX = b"/api/"
# What a request target may hold, byte for byte: visible ASCII, never a fragment.
_TARGET_BYTES = re.compile(rb"[\x21-\x22\x24-\x7e]*")
_ID_BYTES = re.compile(rb"[a-z0-9-]{1,64}")
# Hop-by-hop headers (RFC 9110 7.6.1) are for one connection and never forwarded; `date` and
# `server` of a proxied answer are replaced by fsup's own (HTTP allows one of each).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    }
)
REPLACED_IN_RESPONSE = frozenset({"date", "server"})


@dataclass(frozen=True)
class ProxyTarget:
    formation_id: str
    # The rest of the raw target after the id: always begins with `/`; query included.
    path: bytes


def _bad(message: str) -> FsupError:
    return FsupError("INVALID_REQUEST", message)


def parse_target(raw_path: bytes, query: bytes) -> ProxyTarget:
    """Split `/api/{id}{rest}?{query}` into the decoded id and the raw rest."""
    if not raw_path.startswith(PREFIX):
        raise _bad("a proxied request must use a path of the form /api/{formation_id}/...")
    if not _TARGET_BYTES.fullmatch(raw_path) or not _TARGET_BYTES.fullmatch(query):
        raise _bad("the request path holds bytes that are not visible ASCII")
    raw_id, slash, rest = raw_path[len(PREFIX) :].partition(b"/")
    decoded = unquote_to_bytes(raw_id)
    if not _ID_BYTES.fullmatch(decoded):
        raise _bad(
            "the formation id in the path is not a formation id once decoded (an encoded "
            "slash or percent sign is ambiguous); send it plainly: /api/{formation_id}/..."
        )
    path = slash + rest if slash else b"/"
    return ProxyTarget(decoded.decode("ascii"), path + (b"?" + query if query else b""))


def upstream_url(port: int, target: ProxyTarget) -> httpx.URL:
    """`http://127.0.0.1:{port}{path}`, built from parts and checked once more."""
    try:
        url = httpx.URL(scheme="http", host="127.0.0.1", port=port, raw_path=target.path)
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise _bad("the request path cannot be passed on as a URL path") from None
    if url.host != "127.0.0.1" or url.port != port or not url.raw_path.startswith(b"/"):
        raise _bad("the request path cannot be passed on as a URL path")
    return url


def upstream_path(target: ProxyTarget) -> bytes:
    """The request target sent to the formation (with `Host: 127.0.0.1:<port>`): the raw
    rest, checked once more to be an origin-form path of visible ASCII, so that nothing in it
    can name another host (the upstream client never parses it into a URL)."""
    path = target.path
    if not path.startswith(b"/") or not _TARGET_BYTES.fullmatch(path):
        raise _bad("the request path cannot be passed on as a URL path")
    return path


def connection_tokens(values: list[str]) -> set[str]:
    """Header names listed in `Connection` (they are hop-by-hop for this connection)."""
    return {
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    }


def forwardable(name: str, listed: set[str]) -> bool:
    lower = name.lower()
    return lower not in HOP_BY_HOP and lower not in listed

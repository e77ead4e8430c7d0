"""Which names this server answers to: the guard against DNS rebinding.

A page on `http://evil.example:7890` whose name the attacker re-points at 127.0.0.1 after it
loads is, for the browser, same-origin with itself: it can read whatever fsup answers there,
the bootstrap's token included. What gives it away is the name it used: its requests carry
`Host: evil.example:7890`. So fsup's own browser-reachable routes (`/api/v1/*`, `/ui/*`,
`/openapi.json`, `/metrics`) answer only requests whose `Host` names this server:

- a loopback name or address, any port: `localhost`, `127.0.0.0/8`, `[::1]`;
- a name or address the operator lists in `config.yaml` (`http.allowed_hosts`).

How a `Host` is read (RFC 9110 7.2, RFC 3986 3.2.2), each a decision:

- names are compared without case (`LOCALHOST` is `localhost`);
- one trailing dot is the same name, fully qualified (`localhost.` is `localhost`): DNS
  resolves both alike, and a name only the operator controls stays so with its dot; browsers
  keep the dot in `Host`, so refusing it would refuse `http://localhost.:7890/` typed by hand;
- any port 1-65535 is accepted (the attacker's page uses fsup's port anyway: the port cannot
  tell them apart); a port out of range, empty or not digits is refused;
- a user part (`user@host`) is refused: it belongs to a URL, never to a `Host`;
- an IPv6 zone (`[fe80::1%eth0]`) is refused: it names an interface, not a server;
- an IPv6 address must be in brackets; non-ASCII names are refused (IDNs arrive punycoded);
- no `Host`, an empty one or two of them are refused. h11 already answers 400 to an
  HTTP/1.1 request without `Host` (RFC 9112 3.2) and to any with two; HTTP/1.0 may omit it,
  and Quart then gives the request an empty one; Hypercorn maps HTTP/2's `:authority` (or
  its `host` when there is no `:authority`) to exactly one `Host`.

A request whose target is an absolute URL (`GET http://evil.example/api/v1/...`, RFC 9112
3.2.2) is judged by that URL's authority as well as by its `Host`: the target's authority
overrides the `Host` for the server, so either naming another server is refused.

The bootstrap, which hands out the token, also refuses a request whose `Origin` (when a
browser sends one) is not one of these names, and `Origin: null` (a sandboxed frame or a
file page). Pure functions: the HTTP layer calls them before any handler runs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from supervisor.core.doors import NAMED_ROUTES
from supervisor.core.errors import FsupError
from supervisor.core.safe_json import shown

# A DNS name is at most 253 characters; with brackets, a port and slack, a Host is shorter.
MAX_HOST_LEN = 300
MAX_NAME_LEN = 253
LOOPBACK_NAME = "localhost"
# A label: letters, digits, hyphens inside; underscores are common in internal names.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PORT = re.compile(r"[0-9]{1,5}")
SCHEMES = ("http", "https")
# How a refusal names the routes that check the Host (`core.doors` decides which they are).
WHERE = ", ".join(NAMED_ROUTES[:-1]) + " and " + NAMED_ROUTES[-1]


class HostError(ValueError):
    """A name or authority that is not well formed; the message says why."""


@dataclass(frozen=True)
class Authority:
    """A `Host` read: the name (lowercase, no trailing dot, an IPv6 address in brackets in
    its compressed form, an IPv4 address in dotted form) and the port, when one was given."""

    name: str
    port: int | None


def normalize_name(text: str) -> str:
    """A host name or IP address as compared: lowercase, one trailing dot dropped, an IPv6
    address bracketed (given with or without brackets). `HostError` when it is neither."""
    if not text.isascii():
        raise HostError("it is not ASCII (write an international name in its xn-- form)")
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if bare.count(":") == 1 and bare == text:
        raise HostError("write the name without a port (every port is accepted)")
    if ":" in bare:
        return _ipv6_name(bare)
    name = text.lower().removesuffix(".")
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        pass
    if not name or len(name) > MAX_NAME_LEN:
        raise HostError(f"a host name has 1 to {MAX_NAME_LEN} characters")
    if not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise HostError(
            "a host name is dot-separated labels of letters, digits, '-' and '_' "
            "(1-63 characters each, no '-' at either end)"
        )
    return name


def _ipv6_name(text: str) -> str:
    if "%" in text:
        raise HostError("an IPv6 zone ('%...') names a network interface, not a server")
    try:
        return f"[{ipaddress.IPv6Address(text).compressed}]"
    except ValueError:
        raise HostError(f"{shown(text)} is not an IPv6 address") from None


def parse_authority(text: str) -> Authority:
    """A `Host` value (or an `Origin`'s authority): name and optional port, strictly."""
    if not text:
        raise HostError("it is empty")
    if len(text) > MAX_HOST_LEN:
        raise HostError(f"it is longer than {MAX_HOST_LEN} characters")
    if "@" in text:
        raise HostError("it carries a user part ('...@'); a Host is a name and a port only")
    if text.startswith("["):
        inner, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise HostError("an IPv6 address is missing its closing ']'")
        return Authority(_ipv6_name(inner), _port(rest))
    name, colon, port = text.partition(":")
    if ":" in port:
        raise HostError("an IPv6 address must be written in brackets ('[::1]:7890')")
    return Authority(normalize_name(name), _port(colon + port))


def _port(text: str) -> int | None:
    """`""` (no port) or `":<1-65535>"`."""
    if not text:
        return None
    if not text.startswith(":"):
        raise HostError("only ':<port>' may follow an IPv6 address in brackets")
    digits = text[1:]
    if not digits:
        raise HostError("the port after ':' is empty")
    if not _PORT.fullmatch(digits):
        raise HostError(f"the port {shown(digits, 10)} is not a number from 1 to 65535")
    if not 1 <= int(digits) <= 65535:
        raise HostError(f"the port {int(digits)} is out of range (1-65535)")
    return int(digits)


def is_loopback(name: str | None) -> bool:
    """`localhost` or a loopback address, an IPv6 one with or without brackets: a normalized
    name (as `normalize_name` gives), or a peer's address as the socket reports it."""
    if name is None:
        return False
    if name == LOOPBACK_NAME:
        return True
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def names_this_server(name: str, allowed: Collection[str]) -> bool:
    """Whether a normalized name is loopback or one the operator allowed (normalized)."""
    return is_loopback(name) or name in allowed


def _refused(message: str, details: dict[str, str]) -> FsupError:
    return FsupError("FORBIDDEN", message, details)


def check_host(values: Sequence[str], allowed: Collection[str]) -> Authority:
    """The request's one `Host`, when it names this server; else `FORBIDDEN` naming it.
    `values`: every `Host` value the request carries; `allowed`: normalized names."""
    if len(values) != 1:
        problem = "has no Host header" if not values else f"has {len(values)} Host headers"
        raise _refused(
            f"the request {problem}; fsup answers {WHERE} only under one Host that names it",
            {"header": "Host", "count": str(len(values))},
        )
    value = values[0]
    try:
        authority = parse_authority(value)
    except HostError as exc:
        raise _refused(
            f"Host {shown(value, 100)} is refused: {exc}", {"header": "Host", "host": value[:100]}
        ) from None
    if not names_this_server(authority.name, allowed):
        raise _refused(
            f"Host {shown(value, 100)} is not a name of this server: fsup answers {WHERE} "
            f"under localhost, 127.0.0.1 or [::1] (any port), or a name listed in "
            f"http.allowed_hosts of server/config.yaml (add {authority.name!r} there if "
            f"fsup is reached by that name); this guards against DNS rebinding",
            {"header": "Host", "host": value[:100]},
        )
    return authority


def check_target(target: str, allowed: Collection[str]) -> None:
    """An absolute-form request target (`http://host:port/path`, RFC 9112 3.2.2) names the
    server in its authority, which overrides the `Host` header (and Quart keeps only its
    path): that authority must name this server by the same rule as a `Host`. `target`: the
    request target as sent, up to its query; an origin-form one (`/path`) names no server."""
    if target.startswith("/"):
        return
    shown_target = shown(target, 100)
    details = {"target": target[:100]}
    scheme, separator, rest = target.partition("://")
    if not separator or scheme.lower() not in SCHEMES:
        raise _refused(
            f"the request target {shown_target} is neither a path nor http(s)://host/path",
            details,
        )
    authority = rest.partition("/")[0]
    try:
        name = parse_authority(authority).name
    except HostError as exc:
        raise _refused(f"the request target {shown_target} is refused: {exc}", details) from None
    if not names_this_server(name, allowed):
        raise _refused(
            f"the request target {shown_target} names {name!r}, not this server: an "
            f"absolute URL as target counts as its Host, and fsup answers {WHERE} only "
            f"under localhost, 127.0.0.1 or [::1] (any port), or a name listed in "
            f"http.allowed_hosts of server/config.yaml",
            details,
        )


def check_origin(values: Sequence[str], allowed: Collection[str]) -> None:
    """No `Origin`, or one whose host names this server (for the token's bootstrap);
    `FORBIDDEN` naming it otherwise, `Origin: null` included."""
    if not values:
        return
    if len(values) > 1:
        raise _refused(
            f"the request has {len(values)} Origin headers; a browser sends one",
            {"header": "Origin"},
        )
    value = values[0]
    try:
        name = _origin_name(value)
    except HostError as exc:
        raise _refused(
            f"Origin {shown(value, 100)} is refused: {exc}; the token is handed only to "
            f"this server's own pages",
            {"header": "Origin", "origin": value[:100]},
        ) from None
    if not names_this_server(name, allowed):
        raise _refused(
            f"Origin {shown(value, 100)} is not this server; the token is handed only to "
            f"this server's own pages (localhost, 127.0.0.1, [::1] or http.allowed_hosts)",
            {"header": "Origin", "origin": value[:100]},
        )


def _origin_name(value: str) -> str:
    """The normalized host of an `Origin` (`scheme://host[:port]`, nothing else)."""
    if value == "null":
        raise HostError("an opaque origin (a sandboxed frame, a file or data page) is no server")
    scheme, separator, authority = value.partition("://")
    if not separator or scheme.lower() not in SCHEMES:
        raise HostError("an Origin is http://host[:port] or https://host[:port]")
    if any(mark in authority for mark in "/?#"):
        raise HostError("an Origin has no path, query or fragment")
    return parse_authority(authority).name

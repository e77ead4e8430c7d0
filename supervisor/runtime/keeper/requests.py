"""The keeper's requests, checked: a decoded message becomes one typed request or a
RequestError that says why, before the keeper acts on anything.

Pure (no I/O): the keeper answers a RequestError with `{"ok": false, "error": why}` and closes
the message's fds, so a hostile or broken client costs nothing but its answer.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, NamedTuple

from supervisor.runtime.keeper import protocol


class RequestError(Exception):
    """A request the keeper refuses; the message is the `error` of the answer."""


class Add(NamedTuple):
    """Hold a pair of pipes: write both into `<directory>/<name>.log`."""

    key: str
    directory: str
    name: str
    max_bytes: int
    backups: int


class Flush(NamedTuple):
    """Write what `key`'s pipes already hold."""

    key: str


class List(NamedTuple):
    """The pairs held, those added after the one numbered `after` (the last answer's)."""

    after: int


Request = Add | Flush | List

# How many fds each request carries.
FDS = {protocol.OP_ADD: 2, protocol.OP_FLUSH: 0, protocol.OP_LIST: 0}


def parse(message: dict[str, Any], fd_count: int) -> Request:
    """`message` (with `fd_count` fds beside it) as a request; RequestError otherwise."""
    op = message.get("op")
    if not isinstance(op, str) or op not in FDS:
        raise RequestError(f"unknown op {op!r}")
    if fd_count != FDS[op]:
        raise RequestError(f"{op} takes {FDS[op]} fds, got {fd_count}")
    if op == protocol.OP_ADD:
        return Add(
            key=_key(message),
            directory=_directory(message),
            name=_name(message),
            max_bytes=_integer(message, "max_bytes", 1, 2**62),
            backups=_integer(message, "backups", 0, protocol.MAX_BACKUPS),
        )
    if op == protocol.OP_FLUSH:
        return Flush(_key(message))
    return List(_integer(message, "after", 0, 2**62))


_KINDS = {str: "a string", int: "an integer"}


def _field(message: dict[str, Any], name: str, kind: type) -> Any:
    value = message.get(name)
    # bool is an int to Python, not to the protocol.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RequestError(f"{name} must be {_KINDS[kind]}")
    return value


def _text(message: dict[str, Any], name: str, longest: int) -> str:
    value: str = _field(message, name, str)
    if not value or len(value) > longest or "\0" in value:
        raise RequestError(f"{name} must be 1 to {longest} characters, without NUL")
    return value


def _key(message: dict[str, Any]) -> str:
    return _text(message, "key", protocol.MAX_KEY)


def _directory(message: dict[str, Any]) -> str:
    value = _text(message, "dir", protocol.MAX_DIR)
    if not PurePosixPath(value).is_absolute():
        raise RequestError("dir must be an absolute path")
    return value


def _name(message: dict[str, Any]) -> str:
    value = _text(message, "name", protocol.MAX_NAME)
    if "/" in value or value in (".", ".."):
        raise RequestError("name must be a file name (no /)")
    return value


def _integer(message: dict[str, Any], name: str, low: int, high: int) -> int:
    value: int = _field(message, name, int)
    if not low <= value <= high:
        raise RequestError(f"{name} must be from {low} to {high}")
    return value

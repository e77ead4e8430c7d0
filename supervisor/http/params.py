"""Query parameters, validated: a bad one is a 400 that names it and says what is allowed."""

from __future__ import annotations

from quart import request

from supervisor.core.errors import FsupError
from supervisor.core.safe_json import query_int


def _bad(name: str, problem: str) -> FsupError:
    return FsupError("INVALID_REQUEST", f"query parameter {name!r} {problem}", {"parameter": name})


def int_param(name: str, default: int, low: int, high: int) -> int:
    """A whole number in `low..high`: ASCII digits only (no sign, `_`, spaces or other
    scripts' digits, which `int()` would take)."""
    return query_int(request.args, name, default, low, high)


def choice_param(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = request.args.get(name) or default
    if raw not in choices:
        raise _bad(name, f"must be one of {', '.join(choices)}")
    return raw


def bool_param(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise _bad(name, "must be true or false")


def lines_param(default: int, low: int, high: int) -> int:
    """`lines`, or `limit` as MUXI's CLI and SDKs call it; both at once is refused (they
    could disagree)."""
    if "lines" in request.args and "limit" in request.args:
        raise _bad("limit", "is another name for 'lines'; give one of them")
    name = "limit" if "limit" in request.args else "lines"
    return int_param(name, default, low, high)

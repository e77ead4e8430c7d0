"""Reading client text that must cost little and fail clearly: JSON request bodies and the
whole numbers in query parameters and headers.

`json.loads` recurses once per nesting level (a body of 100000 `[` is a RecursionError), reads
integers of any length (`int()` is slow on long ones and refuses more than 4300 digits), and
accepts NaN, Infinity and duplicate keys. `str.isdigit` accepts '²' (which `int` refuses),
and `int` accepts ' 7', '+7', '7_0' and other scripts' digits. Here the nesting is measured
in one flat pass before parsing, numbers are bounded, and a whole number is 1-19 ASCII
digits. Every refusal is an `INVALID_REQUEST` that names the field or parameter.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from supervisor.core.errors import FsupError

MAX_JSON_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32
MAX_NUMBER_CHARS = 40
WHOLE_NUMBER = re.compile(r"[0-9]{1,19}")
_JSON_TOKENS = re.compile(rb'[\[\]{}"\\]')
_OPEN, _CLOSE, _QUOTE, _BACKSLASH = b"[{", b"]}", ord('"'), ord("\\")


def bad_request(message: str, field: str | None = None) -> FsupError:
    return FsupError("INVALID_REQUEST", message, {"field": field} if field else {})


def shown(text: str, limit: int = 40) -> str:
    """A client's value as a message may quote it: bounded and printable."""
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def whole_number(text: str) -> int | None:
    """`text` as a non-negative whole number, or None unless it is 1-19 ASCII digits."""
    return int(text) if WHOLE_NUMBER.fullmatch(text) else None


def query_int(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter in `low..high` (absent or empty: `default`)."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    value = whole_number(raw)
    if value is None or not low <= value <= high:
        raise FsupError(
            "INVALID_REQUEST",
            f"query parameter {name!r} must be a whole number from {low} to {high}, "
            f"not {shown(raw)}",
            {"parameter": name},
        )
    return value


def json_depth(raw: bytes, limit: int) -> int:
    """How deep arrays and objects nest in `raw`, stopping as soon as it passes `limit`. One
    pass over the brackets, quotes and backslashes only, so it costs little on any input."""
    depth = deepest = 0
    in_string = False
    escaped_at = -1
    for match in _JSON_TOKENS.finditer(raw):
        at = match.start()
        if at == escaped_at:
            continue
        token = raw[at]
        if in_string:
            if token == _BACKSLASH:
                escaped_at = at + 1
            elif token == _QUOTE:
                in_string = False
        elif token == _QUOTE:
            in_string = True
        elif token in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif token in _CLOSE:
            depth -= 1
    return deepest


def loads_object(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """Parse a JSON object body: UTF-8, at most `max_depth` levels, no NaN or Infinity,
    no duplicate keys, numbers of at most `MAX_NUMBER_CHARS` characters."""
    if len(raw) > MAX_JSON_BYTES:
        raise FsupError(
            "PAYLOAD_TOO_LARGE", f"the request body is larger than {MAX_JSON_BYTES} bytes"
        )
    if json_depth(raw, max_depth) > max_depth:
        raise bad_request(f"the request body nests deeper than {max_depth} levels")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the request body is not UTF-8 text") from None
    try:
        body = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_int=_integer,
            parse_float=_finite,
        )
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    if _has_lone_surrogate(body):
        # "\ud800" is valid JSON but not text: SQLite and UTF-8 encoders refuse it later.
        raise bad_request("the request body holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
    return body


def _has_lone_surrogate(value: Any) -> bool:  # noqa: ANN401 - any parsed JSON
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise bad_request(f"the request body holds the key {shown(key)} twice", key[:64])
        found[key] = value
    return found


def _no_constant(name: str) -> Any:  # noqa: ANN401 - json's hook
    raise bad_request(f"{name} is not a JSON number")


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise bad_request(
            f"a number in the request body is longer than {MAX_NUMBER_CHARS} characters"
        )
    return int(text)


def _finite(text: str) -> float:
    value = float(text) if len(text) <= MAX_NUMBER_CHARS else math.inf
    if not math.isfinite(value):
        raise bad_request(f"a number in the request body is too large or long: {shown(text)}")
    return value

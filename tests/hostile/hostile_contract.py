"""The contract's answers, checked: a refusal must be an HTTP status in the contract's error
shape (`error`, mirrored `code` and `message` for MUXI's SDKs), with the expected code, and in
time. Kept apart from the wire (`hostile_wire.py`) because it is what the corpus asserts, not
how it talks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from hostile_wire import Reply

# An app-level answer (a 4xx in the contract's shape) must arrive within this many seconds.
BOUND_S = 5.0


def contract_error(reply: Reply) -> dict[str, Any]:
    """The `error` object of a contract-shaped body, or an AssertionError saying what it is."""
    try:
        body = json.loads(reply.body)
    except ValueError:
        raise AssertionError(f"not a JSON error body: {reply.describe()}") from None
    assert isinstance(body, dict) and set(body) == {"error", "code", "message"}, (
        f"not the contract's shape: {body!r}"
    )
    error = body["error"]
    assert isinstance(error, dict), f"error is not an object: {body!r}"
    assert (body["code"], body["message"]) == (error.get("code"), error.get("message")), (
        f"the top-level mirror (for MUXI's SDKs) differs from the error: {body!r}"
    )
    assert isinstance(error.get("code"), str) and error["code"], f"no error code: {body!r}"
    assert isinstance(error.get("message"), str) and error["message"], f"no message: {body!r}"
    assert isinstance(error.get("details"), dict), f"details is not an object: {body!r}"
    return error


def _as_set(value: int | str | Iterable[Any] | None) -> set[Any] | None:
    if value is None:
        return None
    if isinstance(value, int | str):
        return {value}
    return set(value)


def assert_error(
    reply: Reply,
    status: int | Iterable[int],
    code: str | Iterable[str] | None = None,
    *,
    within: float = BOUND_S,
) -> dict[str, Any]:
    """A clear app-level refusal: the status, the contract's shape, the code, in time."""
    statuses, codes = _as_set(status), _as_set(code)
    assert reply.status is not None, f"fsup closed without answering: {reply.describe()}"
    assert reply.status in (statuses or set()), (
        f"expected HTTP {sorted(statuses or [])}{' ' + str(sorted(codes)) if codes else ''}, "
        f"got {reply.describe()}"
    )
    error = contract_error(reply)
    if codes is not None:
        assert error["code"] in codes, f"expected code {sorted(codes)}, got {error}"
    assert reply.elapsed <= within, f"the refusal took {reply.elapsed:.2f}s (bound {within}s)"
    return error


def assert_unparseable_refused(
    reply: Reply, statuses: Iterable[int] = (400,), *, within: float = BOUND_S
) -> None:
    """Refusal of HTTP that cannot be parsed: Hypercorn's bodiless 400 (or 413/414/431) is
    accepted here, and so is the contract's shape; a bare close is not an answer."""
    allowed = set(statuses)
    assert reply.status is not None, f"fsup closed without answering: {reply.describe()}"
    assert reply.status in allowed, f"expected HTTP {sorted(allowed)}, got {reply.describe()}"
    if reply.body.strip():
        contract_error(reply)
    assert reply.elapsed <= within, f"the refusal took {reply.elapsed:.2f}s (bound {within}s)"

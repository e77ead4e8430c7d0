"""Rendering answers: the contract's error shape, and operations as JSON or SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from quart import Response, jsonify, request

from supervisor.core.errors import FsupError
from supervisor.http import sse
from supervisor.operations import Event, outcome


def error_response(error: FsupError) -> tuple[Response, int]:
    """The contract's error shape; `Retry-After` when the error says when to retry (a
    formation being deleted: `details.retry_after_s`)."""
    response = jsonify(error.to_json())
    retry_after = error.details.get("retry_after_s")
    if isinstance(retry_after, int) and not isinstance(retry_after, bool):
        response.headers["Retry-After"] = str(retry_after)
    return response, error.status


def wants_event_stream() -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


async def render_operation(events: AsyncIterator[Event | None], success_status: int = 200) -> Any:
    """SSE when the client asks for it, else one JSON answer once the operation is done."""
    if not wants_event_stream():
        last = await outcome(events)
        if last.error is not None:
            return error_response(last.error)
        return jsonify(last.data), success_status

    async def pairs() -> AsyncIterator[tuple[str, dict[str, Any]] | None]:
        async for event in events:
            yield None if event is None else (event.kind, event.data)

    return await sse.numbered_response(pairs())

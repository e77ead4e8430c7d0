"""Rendering answers: the contract's error shape, and operations as JSON or SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from quart import Response, jsonify, make_response, request

from supervisor.core.errors import FsupError
from supervisor.runtime.operations import Event, outcome


def error_response(error: FsupError) -> tuple[Response, int]:
    return jsonify(error.to_json()), error.status


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

    return await sse_response(pairs())


async def sse_response(events: AsyncIterator[tuple[str, dict[str, Any]] | None]) -> Any:
    """A Server-Sent Events response: each (event, data) pair gets the next `id:`; None
    sends a heartbeat comment."""

    async def stream() -> AsyncIterator[bytes]:
        number = 0
        async for item in events:
            if item is None:
                yield b": heartbeat\n\n"
                continue
            number += 1
            yield sse_frame(number, *item)

    response = await make_response(
        stream(),
        200,
        {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )
    response.timeout = None  # type: ignore[union-attr]  # Quart would cut a stream at 60 s
    return response


def sse_frame(event_id: int, kind: str, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()

"""Server-Sent Events, written once: the frame, the response, and numbered progress streams.

Every SSE answer of fsup goes through `stream_response`: the same headers (no caching, no
proxy buffering) and no response timeout (Quart would cut a stream at 60 s).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from quart import make_response

HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
HEARTBEAT = b": heartbeat\n\n"


def frame(event_id: int, kind: str, data: dict[str, Any]) -> bytes:
    return frame_json(event_id, kind, json.dumps(data))


def frame_json(event_id: int, kind: str, data_json: str) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {data_json}\n\n".encode()


async def stream_response(frames: AsyncIterator[bytes]) -> Any:
    response = await make_response(frames, 200, HEADERS)
    response.timeout = None  # type: ignore[union-attr]
    return response


async def numbered_response(events: AsyncIterator[tuple[str, dict[str, Any]] | None]) -> Any:
    """Each (event, data) pair gets the next `id:` (a one-shot stream: ids from 1); None
    sends a heartbeat comment."""

    async def frames() -> AsyncIterator[bytes]:
        number = 0
        async for item in events:
            if item is None:
                yield HEARTBEAT
                continue
            number += 1
            yield frame(number, *item)

    return await stream_response(frames())

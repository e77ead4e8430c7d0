"""`/rpc`'s auth and audit: the before- and after-request hooks of its Blueprints.

Headers first (an unsigned or stale request is refused before a body byte is read), then the
body under the size bound and read deadline, then its signature. Every `/rpc` call is audited,
refused ones included (a stream: until its headers). The app calls the same two hooks for a
`/rpc` path that matched no route, so an unsigned client learns nothing of which routes exist
(401 before 404 or 405) and the refusal is audited too.
"""

from __future__ import annotations

import time

from quart import Response, g, request

from supervisor.core.hmac_auth import check_head, check_signature, claimed_key_id, scheme_of
from supervisor.http.services import services


async def authenticate() -> None:
    g.started = time.monotonic()
    config = services()
    path = request.scope.get("raw_path") or request.path.encode()
    headers = request.headers
    pending = check_head(
        config.credentials,
        headers,  # type: ignore[arg-type]
        request.method,
        path,
        config.config.accepted_schemes(),
    )
    if pending is None:
        return  # MUXI-HMAC: the body is not signed, the handler reads it when needed
    body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    query = request.scope.get("query_string") or b""
    if query:
        path += b"?" + query
    check_signature(config.credentials, pending, request.method, path, body)


async def audit(response: Response) -> Response:
    if "started" not in g:
        return response  # refused before authentication (the head's checks)
    query = request.query_string.decode("latin-1")
    path = request.path + (f"?{query}" if query else "")
    headers = request.headers
    services().store.record_audit(
        claimed_key_id(headers)[:64],  # type: ignore[arg-type]
        request.method,
        path[:1024],
        response.status_code,
        round((time.monotonic() - g.started) * 1000, 2),
        request.remote_addr or "",
        scheme_of(headers) or "",  # type: ignore[arg-type]
    )
    return response

"""`/rpc`'s auth: its Blueprints' before-request hook, and what a call claims for the audit.

Headers first (an unsigned or stale request is refused before a body byte is read), then the
body under the size bound and read deadline, then its signature. Every `/rpc` call is audited,
refused ones included (a stream: until its headers), with the scheme and key id it claims
(`claim`, which the app calls for every `/rpc` path before any check). The app authenticates
a `/rpc` path that matched no route too, so an unsigned client learns nothing of which routes
exist (401 before 404 or 405).
"""

from __future__ import annotations

from quart import request

from supervisor.core.hmac_auth import (
    MUXI_HMAC,
    SIGNED_HEADERS,
    check_head,
    check_signature,
    claimed_key_id,
    scheme_of,
)
from supervisor.http import audit as trail
from supervisor.http.services import services

# The scheme's name in config.yaml -> its name in the audit trail (the contract's `auth`).
AUDIT_NAMES = {SIGNED_HEADERS: trail.HMAC, MUXI_HMAC: trail.MUXI_HMAC}


async def authenticate() -> None:
    trail.start_clock()
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
    if pending is not None:  # the seed's scheme signs the body too: read it, check it
        body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
        query = request.scope.get("query_string") or b""
        if query:
            path += b"?" + query
        check_signature(config.credentials, pending, request.method, path, body)
    # MUXI-HMAC does not sign the body: the handler reads it when needed.
    trail.accepted()


def claim() -> tuple[str, str]:
    """The audit's name for the scheme the request claims and the key id it names, before
    anything is checked."""
    headers = request.headers
    scheme = AUDIT_NAMES.get(scheme_of(headers) or "", "")  # type: ignore[arg-type]
    return scheme, claimed_key_id(headers)  # type: ignore[arg-type]

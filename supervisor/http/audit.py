"""The audit trail's HTTP side: one entry per call that changes something, whichever door
it came through (`/rpc` signed, `/api/v1` with the bearer token or the dashboard's session
cookie), and per `/rpc` call of any method.

Each entry says how the caller authenticated, or claimed to (`auth`), and whether fsup
accepted it: a refused call is recorded with the credential it presented, unchecked, and
counts against the store's smaller budget of refused rows (`store/audit.py`), so that a
flood of them can neither fill the disk nor push the accepted calls out of the trail.
A call is audited whatever answered it: the head's checks, the Host check, the auth, the
handler, or an error. The clock starts when fsup first looks at the credentials; a call
refused before that (the head's checks, the Host check) is recorded with `duration_ms` 0.
"""

from __future__ import annotations

import time

from quart import Response, g, request

from supervisor.http.services import services

# `auth`'s values. Empty: the caller sent no credentials.
HMAC = "hmac"  # the seed's signed headers (`signed-headers` in config.yaml)
MUXI_HMAC = "muxi-hmac"
BEARER = "bearer"
SESSION = "session"
AUTH_VALUES = (HMAC, MUXI_HMAC, BEARER, SESSION, "")
# Methods that change nothing: not audited outside `/rpc`.
READS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_KEY_ID = 64
MAX_PATH = 1024


def start_clock() -> None:
    """Called by each door's auth hook as it starts: the entry's duration counts from here."""
    g.audit_started = time.monotonic()


def accepted() -> None:
    """Called by each door's auth hook once the credentials checked out."""
    g.audit_accepted = True


def record(response: Response, auth: str, key_id: str = "") -> Response:
    """Write the current request's entry (an after-request hook's last step)."""
    query = request.query_string.decode("latin-1")
    path = request.path + (f"?{query}" if query else "")
    started = g.get("audit_started")
    duration = 0.0 if started is None else round((time.monotonic() - started) * 1000, 2)
    services().store.record_audit(
        key_id[:MAX_KEY_ID],
        request.method,
        path[:MAX_PATH],
        response.status_code,
        duration,
        request.remote_addr or "",
        auth,
        authenticated=bool(g.get("audit_accepted")),
    )
    return response

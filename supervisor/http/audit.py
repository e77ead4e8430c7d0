"""The audit trail's HTTP side: one entry per call that changes something, whichever door
it came through (`/rpc` signed, `/api/v1` with the bearer token or the dashboard's session
cookie), and per `/rpc` call of any method.

Each entry says how the caller authenticated, or claimed to (`auth`), and whether fsup
accepted it: a refused call is recorded with the credential it presented, unchecked, and
counts against the store's smaller budget of refused rows (`store/audit.py`), so that a
flood of them can neither fill the disk nor push the accepted calls out of the trail.
A call is audited whatever answered it: the head's checks, the Host check, the auth, the
handler, or an error; and whatever became of it: a call whose client went away (or timed out)
before the answer is recorded as the request context exits, with status 499 (nginx's "client
closed request"), the change it asked for having gone on. Exactly one entry per call: the app
marks the call audited (`audit_as`) before any check, and the first `record` writes it.
The clock starts when fsup first looks at the credentials; a call refused before that (the
head's checks, the Host check) is recorded with `duration_ms` 0.

The store writes the entries in batches (`server.py`, `flush_audit`): a SIGKILL of
fsup can lose the entries of its last quarter-second, never write one twice.
"""

from __future__ import annotations

import time

import trio
from quart import g, request

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
# The status of a call whose client closed the connection before its answer (nginx's).
CLIENT_CLOSED = 499


def start_clock() -> None:
    """Called by each door's auth hook as it starts: the entry's duration counts from here."""
    g.audit_started = time.monotonic()


def accepted() -> None:
    """Called by each door's auth hook once the credentials checked out."""
    g.audit_accepted = True


def audit_as(auth: str, key_id: str = "") -> None:
    """Mark the current call as audited, under the credential it claims (unchecked)."""
    g.audit_claim = (auth, key_id)


def is_cancellation(exc: BaseException | None) -> bool:
    """Whether the request ended by being cancelled (its client went away), not by an
    error: trio's `Cancelled`, alone or in a group."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(trio.Cancelled) is not None
    return isinstance(exc, trio.Cancelled)


def record(status: int) -> None:
    """Write the current call's entry, if it is audited and not yet recorded. Synchronous
    (the store buffers the row): safe where the request is being cancelled."""
    claim = g.get("audit_claim")
    if claim is None or g.get("audit_recorded"):
        return
    g.audit_recorded = True
    auth, key_id = claim
    query = request.query_string.decode("latin-1")
    path = request.path + (f"?{query}" if query else "")
    started = g.get("audit_started")
    duration = 0.0 if started is None else round((time.monotonic() - started) * 1000, 2)
    services().store.record_audit(
        key_id[:MAX_KEY_ID],
        request.method,
        path[:MAX_PATH],
        status,
        duration,
        request.remote_addr or "",
        auth,
        authenticated=bool(g.get("audit_accepted")),
    )

"""HMAC-SHA256 request signing for `/rpc/*`, exactly as the seed's Go function.

Canonical string: `METHOD\\nPATH\\nTIMESTAMP\\nBODY`. PATH is the raw request path plus `?query`
when there is a query, taken as sent (never re-encoded), and the key is the `secret_key` string's
bytes (the Go code does `[]byte(secretKey)`; the base64 text is not decoded). Pure functions:
the server, the client and the CLI share them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import FsupError

MAX_SKEW_S = 300.0
KEY_ID_HEADER = "X-MUXI-Key-ID"
TIMESTAMP_HEADER = "X-MUXI-Timestamp"
SIGNATURE_HEADER = "X-MUXI-Signature"


def canonical(method: str, path: bytes, timestamp: str, body: bytes) -> bytes:
    return b"\n".join([method.upper().encode(), path, timestamp.encode(), body])


def sign(secret_key: str, method: str, path: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret_key.encode(), canonical(method, path, timestamp, body), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def signed_headers(key_id: str, secret_key: str, method: str, path: bytes, body: bytes) -> dict[str, str]:
    """The three auth headers for one request (the client and CLI side)."""
    timestamp = rfc3339_now()
    return {
        KEY_ID_HEADER: key_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret_key, method, path, timestamp, body),
    }


@dataclass(frozen=True)
class Credentials:
    key_id: str
    secret_key: str


def _unauthorized(message: str) -> FsupError:
    return FsupError("UNAUTHORIZED", message)


def parse_timestamp(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _unauthorized(
            f"{TIMESTAMP_HEADER} is not an RFC3339 time (e.g. 2026-01-26T12:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        raise _unauthorized(f"{TIMESTAMP_HEADER} must carry a time zone (end it with Z)")
    return parsed


def verify(
    creds: Credentials,
    method: str,
    path: bytes,
    body: bytes,
    headers: dict[str, str],
    now: datetime | None = None,
) -> None:
    """Raise `FsupError(UNAUTHORIZED)` unless the headers sign this exact request."""
    key_id = headers.get(KEY_ID_HEADER.lower()) or ""
    timestamp = headers.get(TIMESTAMP_HEADER.lower()) or ""
    signature = headers.get(SIGNATURE_HEADER.lower()) or ""
    if not (key_id and timestamp and signature):
        raise _unauthorized(
            f"missing authentication headers ({KEY_ID_HEADER}, {TIMESTAMP_HEADER}, "
            f"{SIGNATURE_HEADER})"
        )
    sent = parse_timestamp(timestamp)
    skew = abs(((now or datetime.now(UTC)) - sent).total_seconds())
    if skew > MAX_SKEW_S:
        raise _unauthorized(
            f"request timestamp is {skew:.0f}s away from the server clock (limit "
            f"{MAX_SKEW_S:.0f}s); check that both clocks are right"
        )
    expected = sign(creds.secret_key, method, path, timestamp, body)
    key_ok = hmac.compare_digest(key_id.encode(), creds.key_id.encode())
    signature_ok = hmac.compare_digest(signature.encode(), expected.encode())
    if not (key_ok and signature_ok):
        raise _unauthorized("invalid key id or signature")

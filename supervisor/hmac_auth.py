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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import FsupError

MAX_SKEW_S = 300.0
KEY_ID_HEADER = "X-MUXI-Key-ID"
TIMESTAMP_HEADER = "X-MUXI-Timestamp"
SIGNATURE_HEADER = "X-MUXI-Signature"
MAX_TIMESTAMP_LEN = 64
# base64 of a 32-byte SHA-256 MAC.
SIGNATURE_SHAPE = re.compile(r"[A-Za-z0-9+/]{43}=")


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


@dataclass(frozen=True)
class SignedHeaders:
    """The auth headers of a request whose key and time checked out: only the signature over
    the body is left to check."""

    timestamp: str
    signature: str


def check_headers(
    creds: Credentials, headers: Mapping[str, str], now: datetime | None = None
) -> SignedHeaders:
    """Everything that can be checked before a body byte is read: the three headers are
    there, the key id is ours (compared in constant time), the timestamp is in the window and
    the signature has the shape of one. An unsigned or stale upload is refused unread."""
    key_id = headers.get(KEY_ID_HEADER.lower()) or ""
    timestamp = headers.get(TIMESTAMP_HEADER.lower()) or ""
    signature = headers.get(SIGNATURE_HEADER.lower()) or ""
    if not (key_id and timestamp and signature):
        raise _unauthorized(
            f"missing authentication headers ({KEY_ID_HEADER}, {TIMESTAMP_HEADER}, "
            f"{SIGNATURE_HEADER})"
        )
    if len(timestamp) > MAX_TIMESTAMP_LEN:
        raise _unauthorized(f"{TIMESTAMP_HEADER} is too long to be an RFC3339 time")
    sent = parse_timestamp(timestamp)
    skew = abs(((now or datetime.now(UTC)) - sent).total_seconds())
    if skew > MAX_SKEW_S:
        raise _unauthorized(
            f"request timestamp is {skew:.0f}s away from the server clock (limit "
            f"{MAX_SKEW_S:.0f}s); check that both clocks are right"
        )
    key_ok = hmac.compare_digest(key_id.encode(), creds.key_id.encode())
    if not key_ok or not SIGNATURE_SHAPE.fullmatch(signature):
        raise _unauthorized("invalid key id or signature")
    return SignedHeaders(timestamp, signature)


def check_signature(
    creds: Credentials, signed: SignedHeaders, method: str, path: bytes, body: bytes
) -> None:
    """The last check, once the body is read: the signature covers this exact request."""
    expected = sign(creds.secret_key, method, path, signed.timestamp, body)
    if not hmac.compare_digest(signed.signature.encode(), expected.encode()):
        raise _unauthorized("invalid key id or signature")


def verify(
    creds: Credentials,
    method: str,
    path: bytes,
    body: bytes,
    headers: Mapping[str, str],
    now: datetime | None = None,
) -> None:
    """Raise `FsupError(UNAUTHORIZED)` unless the headers sign this exact request."""
    check_signature(creds, check_headers(creds, headers, now), method, path, body)

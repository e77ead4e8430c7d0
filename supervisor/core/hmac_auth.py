"""HMAC-SHA256 request signing for `/rpc/*`: the seed's scheme, exactly as its Go function,
and which of the accepted schemes a request uses (the MUXI clients' one is in `muxi_hmac`).

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
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from supervisor.core import muxi_hmac
from supervisor.core.errors import FsupError
from supervisor.core.timestamps import rfc3339_now

MAX_SKEW_S = 300.0
KEY_ID_HEADER = "X-MUXI-Key-ID"
TIMESTAMP_HEADER = "X-MUXI-Timestamp"
SIGNATURE_HEADER = "X-MUXI-Signature"
MAX_TIMESTAMP_LEN = 64
# base64 of a 32-byte SHA-256 MAC.
SIGNATURE_SHAPE = re.compile(r"[A-Za-z0-9+/]{43}=")
AUTHORIZATION_HEADER = "Authorization"
# The headers that carry a credential, on /rpc (either scheme) and /api/v1 (the bearer token).
CREDENTIAL_HEADERS = (KEY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER, AUTHORIZATION_HEADER)

# The schemes' names, as `auth.schemes` in config.yaml and `--auth-scheme` spell them.
SIGNED_HEADERS = "signed-headers"
MUXI_HMAC = "muxi-hmac"
SCHEMES = (SIGNED_HEADERS, MUXI_HMAC)


def canonical(method: str, path: bytes, timestamp: str, body: bytes) -> bytes:
    return b"\n".join([method.upper().encode(), path, timestamp.encode(), body])


def sign(secret_key: str, method: str, path: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret_key.encode(), canonical(method, path, timestamp, body), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def signed_headers(
    key_id: str, secret_key: str, method: str, path: bytes, body: bytes
) -> dict[str, str]:
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


def check_single_credentials(names: Iterable[str]) -> None:
    """Each credential header at most once (`names`: every header name the request carries,
    repeats included). With two, one reader could check the first and another act on the
    last, as with a query parameter given twice: refused with 401, whatever the values."""
    counts = Counter(name.lower() for name in names)
    for header in CREDENTIAL_HEADERS:
        if counts[header.lower()] > 1:
            raise FsupError(
                "UNAUTHORIZED",
                f"the request carries {header} {counts[header.lower()]} times; send each "
                f"credential header once",
                {"header": header},
            )


def _has_seed_headers(headers: Mapping[str, str]) -> bool:
    return any(
        headers.get(name.lower()) for name in (KEY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
    )


def scheme_of(headers: Mapping[str, str]) -> str | None:
    """The scheme a request claims (for the audit log, before anything is checked)."""
    if _has_seed_headers(headers):
        return SIGNED_HEADERS
    if muxi_hmac.is_muxi_hmac(headers.get(AUTHORIZATION_HEADER.lower()) or ""):
        return MUXI_HMAC
    return None


def claimed_key_id(headers: Mapping[str, str]) -> str:
    """The key id a request names, unchecked (for the audit log)."""
    if scheme_of(headers) == MUXI_HMAC:
        try:
            return muxi_hmac.parse(headers.get(AUTHORIZATION_HEADER.lower()) or "").key_id
        except FsupError:
            return ""
    return headers.get(KEY_ID_HEADER.lower()) or ""


def check_head(
    creds: Credentials,
    headers: Mapping[str, str],
    method: str,
    path: bytes,
    schemes: tuple[str, ...] = SCHEMES,
    now: datetime | None = None,
) -> SignedHeaders | None:
    """Authenticate from the head alone. The MUXI-HMAC scheme is checked completely here (it
    does not sign the body): None. The seed's scheme has its signature left to check once the
    body is read (`check_signature`). A request with both, or with neither, is refused."""
    authorization = headers.get(AUTHORIZATION_HEADER.lower())
    seed = _has_seed_headers(headers)
    if authorization and seed:
        raise _unauthorized(
            f"the request carries both {AUTHORIZATION_HEADER} and the {KEY_ID_HEADER} headers; "
            "sign it with one scheme only"
        )
    if seed:
        _require(SIGNED_HEADERS, schemes)
        return check_headers(creds, headers, now)
    if authorization is None:
        raise _unauthorized(f"the request is not signed; sign it with {_how(schemes)}")
    _require(MUXI_HMAC, schemes)
    check_muxi_hmac(creds, muxi_hmac.parse(authorization), method, path, now)
    return None


def _how(schemes: tuple[str, ...]) -> str:
    ways = {
        SIGNED_HEADERS: f"the {KEY_ID_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers",
        MUXI_HMAC: f"{AUTHORIZATION_HEADER}: {muxi_hmac.SCHEME}",
    }
    return " or ".join(ways[scheme] for scheme in schemes)


def _require(scheme: str, schemes: tuple[str, ...]) -> None:
    if scheme not in schemes:
        raise _unauthorized(
            f"the {scheme} signing scheme is turned off on this server (auth.schemes in "
            f"config.yaml accepts {', '.join(schemes)})"
        )


def check_muxi_hmac(
    creds: Credentials,
    sent: muxi_hmac.MuxiAuthorization,
    method: str,
    path: bytes,
    now: datetime | None = None,
) -> None:
    """Key, window and signature of an `Authorization: MUXI-HMAC` request, the same checks
    and messages as the seed's scheme."""
    skew = abs((now or datetime.now(UTC)).timestamp() - sent.timestamp)
    if skew > MAX_SKEW_S:
        raise _unauthorized(
            f"request timestamp is {skew:.0f}s away from the server clock (limit "
            f"{MAX_SKEW_S:.0f}s); check that both clocks are right"
        )
    expected = muxi_hmac.sign(creds.secret_key, sent.timestamp, method, path)
    key_ok = hmac.compare_digest(sent.key_id.encode(), creds.key_id.encode())
    signature_ok = hmac.compare_digest(sent.signature.encode(), expected.encode())
    if not (key_ok and signature_ok):
        raise _unauthorized("invalid key id or signature")

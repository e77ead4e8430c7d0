"""The MUXI ecosystem's signing scheme: one `Authorization` header, as MUXI's server, its
`muxi` CLI and every SDK send it.

    Authorization: MUXI-HMAC key=<key_id>, timestamp=<unix seconds>, signature=<base64>
    signature = base64(HMAC-SHA256(secret_key, "<timestamp>;<METHOD>;<path without query>"))

It signs neither the query nor the body (the seed's `X-MUXI-*` scheme in `hmac_auth` does):
whoever can see one signed request can, within the timestamp window, send the same method
and path with another query or body. That is why an operator can turn it off
(`auth.schemes` in config.yaml). Pure functions: the server, the client and the CLI share
them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from supervisor.core.errors import FsupError

SCHEME = "MUXI-HMAC"
# Longer than any honest header (a key id, ten digits and 44 characters of base64).
MAX_HEADER_LEN = 512
_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"\\]*)"|([^\s,"]*))\s*')
_NAMES = ("key", "timestamp", "signature")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{43}=")


@dataclass(frozen=True)
class MuxiAuthorization:
    """A parsed `Authorization: MUXI-HMAC ...` value (nothing checked against a key yet)."""

    key_id: str
    timestamp: int
    signature: str


def message(timestamp: int, method: str, path: bytes) -> bytes:
    """What is signed: the path without its query, as sent."""
    return b";".join([str(timestamp).encode(), method.upper().encode(), path.split(b"?", 1)[0]])


def sign(secret_key: str, timestamp: int, method: str, path: bytes) -> str:
    mac = hmac.new(secret_key.encode(), message(timestamp, method, path), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def authorization(
    key_id: str, secret_key: str, method: str, path: bytes, now: float | None = None
) -> str:
    """The header value for one request (the client and CLI side)."""
    timestamp = int(time.time() if now is None else now)
    signature = sign(secret_key, timestamp, method, path)
    return f"{SCHEME} key={key_id}, timestamp={timestamp}, signature={signature}"


def is_muxi_hmac(value: str) -> bool:
    """Whether an `Authorization` value claims this scheme (the name is case-insensitive)."""
    return value.strip()[: len(SCHEME) + 1].upper() in (SCHEME + " ", SCHEME)


def _refuse(problem: str) -> FsupError:
    return FsupError(
        "UNAUTHORIZED",
        f"malformed Authorization header: {problem}; expected "
        f"'{SCHEME} key=<key id>, timestamp=<unix seconds>, signature=<base64>'",
    )


def parse(value: str) -> MuxiAuthorization:
    """Parse strictly: the three parameters, each once, nothing else."""
    if len(value) > MAX_HEADER_LEN:
        raise _refuse(f"longer than {MAX_HEADER_LEN} characters")
    if not is_muxi_hmac(value):
        raise _refuse(f"the scheme is not {SCHEME}")
    params: dict[str, str] = {}
    for part in value.strip()[len(SCHEME) :].split(","):
        match = _PARAM.fullmatch(part)
        if match is None:
            raise _refuse("each parameter is name=value, separated by commas")
        name = match.group(1).lower()
        if name not in _NAMES:
            raise _refuse(f"unknown parameter {name!r}")
        if name in params:
            raise _refuse(f"parameter {name!r} is given twice")
        params[name] = match.group(2) if match.group(2) is not None else match.group(3)
    missing = [name for name in _NAMES if not params.get(name)]
    if missing:
        raise _refuse(f"missing {', '.join(missing)}")
    if not _TIMESTAMP.fullmatch(params["timestamp"]):
        raise _refuse("timestamp must be unix seconds (digits only)")
    if not _SIGNATURE.fullmatch(params["signature"]):
        raise _refuse("signature must be the base64 of a SHA-256 HMAC (44 characters)")
    return MuxiAuthorization(params["key"], int(params["timestamp"]), params["signature"])

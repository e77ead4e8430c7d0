"""The contract's error codes and the one exception type that carries them.

Every failure a client can cause is an `FsupError` with a code from `STATUS_BY_CODE`; the HTTP
layer turns it into `{"error": {"code", "message", "details"}}` with the matching status, and
actors hand it back to the asker instead of dying.
"""

from __future__ import annotations

from typing import Any

STATUS_BY_CODE: dict[str, int] = {
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "FORMATION_NOT_FOUND": 404,
    "SEARCH_NOT_FOUND": 404,
    "RESULT_NOT_FOUND": 404,
    "FORMATION_ALREADY_EXISTS": 409,
    "FORMATION_ALREADY_RUNNING": 409,
    "FORMATION_NOT_RUNNING": 409,
    "VERSION_NOT_HIGHER": 409,
    "UPDATE_IN_PROGRESS": 409,
    "NO_PREVIOUS_VERSION": 409,
    # A lifecycle operation that a later request (stop, delete) interrupted.
    "OPERATION_CANCELLED": 409,
    # The formation is starting, stopping or restarting: retry in a moment.
    "FORMATION_BUSY": 409,
    # A process outside the formation listens on its port: free the port, then retry.
    "PORT_IN_USE": 409,
    "INVALID_BUNDLE": 400,
    "INVALID_FORMATION": 400,
    "INVALID_REQUEST": 400,
    "PAYLOAD_TOO_LARGE": 413,
    "HEALTH_CHECK_FAILED": 422,
    "BAD_GATEWAY": 502,
    "PORTS_EXHAUSTED": 503,
    "FORMATION_UNAVAILABLE": 503,
    "INTERNAL": 500,
}


class FsupError(Exception):
    """A failure with a contract code, a message for people and machine-readable details."""

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        """`status` overrides the code's usual HTTP status (the proxy answers a stopped
        formation with 503, where the management API answers 409)."""
        if code not in STATUS_BY_CODE:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self._status = status

    @property
    def status(self) -> int:
        return self._status or STATUS_BY_CODE[self.code]

    def to_json(self) -> dict[str, Any]:
        """The contract's `{"error": {...}}`, with `code` and `message` mirrored at the top:
        MUXI's SDKs read those two from the top level and would otherwise show the user a
        dict and an empty message."""
        return {
            "error": {"code": self.code, "message": self.message, "details": self.details},
            "code": self.code,
            "message": self.message,
        }

    def __repr__(self) -> str:
        return f"FsupError({self.code!r}, {self.message!r})"

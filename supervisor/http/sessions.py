"""Ended sessions: the ids of logged-out session cookies, refused until they expire.

Session cookies are signed, not stored (`api_auth`), so a logout cannot delete one: it
records the cookie's id (its signature) with its expiry here instead, and the auth hook
refuses a recorded id. The record is kept in `server/sessions.revoked` (0600) as well as in
memory, so a cookie replayed after a restart of fsup is still refused; entries are dropped
once their cookie has expired anyway, which bounds the file by the sessions opened in
`SESSION_TTL_S`. Rotating the token ends every session at once (their signatures no longer
verify) and empties the record.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from supervisor.storage.home import write_private

log = logging.getLogger("fsup.http")

# At most this many ended sessions are remembered; the ones closest to expiry go first.
MAX_REVOKED = 10_000


class RevokedSessions:
    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._ids: dict[str, int] = self._load()

    def _load(self) -> dict[str, int]:
        if self._path is None or not self._path.exists():
            return {}
        try:
            raw = json.loads(self._path.read_text())
            return {
                str(k): int(v) for k, v in raw.items() if isinstance(v, int) and len(str(k)) == 64
            }
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("ignoring %s: %s", self._path, exc)
            return {}

    def _save(self) -> None:
        if self._path is not None:
            write_private(self._path, json.dumps(self._ids))

    def revoke(self, session_id: str, expiry: int, now: float | None = None) -> None:
        moment = now if now is not None else time.time()
        self._ids = {k: v for k, v in self._ids.items() if v >= moment}
        self._ids[session_id] = expiry
        if len(self._ids) > MAX_REVOKED:
            kept = sorted(self._ids.items(), key=lambda item: item[1])[-MAX_REVOKED:]
            self._ids = dict(kept)
        self._save()

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self._ids

    def clear(self) -> None:
        self._ids = {}
        self._save()

    def __len__(self) -> int:
        return len(self._ids)

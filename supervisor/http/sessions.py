"""Ended sessions: the ids of logged-out session cookies, refused until they expire, and a
floor under which every session is refused.

Session cookies are signed, not stored (`api_auth`), so a logout cannot delete one: it
records the cookie's id (its signature) with its expiry here instead, and the auth hook
refuses a recorded id. The record is bounded (`MAX_REVOKED` ids). It must never forget an
id whose cookie still verifies, or that cookie would be accepted again: when an unexpired id
has to go to make room, the record raises its *floor* to that id's expiry instead ("every
session expiring at or before X is refused"), which ends at most the sessions opened no
later than the one dropped, never reopens one (fail closed). Expired ids are simply pruned.

On disk (`server/sessions.revoked`, 0600) the record is a journal of lines, `e <expiry>
<id>` for a logout and `f <floor>` for a floor, replayed in order at start: a logout appends
one line (one `write`, then `fsync`), and the journal is rewritten whole (`write_private`:
a temporary file, then a rename) only once it holds more than twice the live record plus
`COMPACT_SLACK` lines, so a logout costs O(1) amortised and the file stays bounded
(`max_bytes`, 1.7 MB). A journal cut short by a crash in mid-append loses only that unanswered
logout; anything else that cannot be read (damaged, oversized, unreadable) ends every
session instead (a floor at now + `SESSION_TTL_S`): fsup can no longer tell which sessions
were logged out, and starting a new one costs a client one POST. Rotating the token ends
every session at once (their signatures no longer verify) and empties the record.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from supervisor.core.errors import FsupError
from supervisor.http.api_auth import SESSION_TTL_S
from supervisor.storage.home import write_private

log = logging.getLogger("fsup.http")

# At most this many logged-out sessions are remembered one by one; past it, the floor rises.
MAX_REVOKED = 10_000
# The journal is compacted once it holds more than 2 * live entries + this many lines.
COMPACT_SLACK = 1_024
# The longest journal line: "e <12 digits> <64 hex>\n".
LINE_MAX = 80
LINE = re.compile(r"e ([0-9]{1,12}) ([0-9a-f]{64})|f ([0-9]{1,12})")
# What a crash in mid-append can leave at the end: a prefix of a line, without its newline.
TORN_TAIL = re.compile(r"[ef]?[ 0-9a-f]*")
ID = re.compile(r"[0-9a-f]{64}")
WARN_EVERY_S = 60

LOGGED_OUT = "this session was logged out; POST /api/v1/session again"
BELOW_FLOOR = (
    "this session has ended (sessions expiring at or before {floor} were ended: the record of "
    "logged-out sessions was full or could not be read); POST /api/v1/session again"
)


class Damaged(ValueError):
    """The journal cannot be trusted: the caller ends every session."""


class EndedSessions:
    """The record itself, pure (no clock, no file): ids with their expiry, a heap of them by
    expiry (to prune and to drop the nearest to expiry in O(log n)), and the floor."""

    def __init__(self, cap: int = MAX_REVOKED) -> None:
        self.cap = cap
        self.floor = 0
        self._ids: dict[str, int] = {}
        self._by_expiry: list[tuple[int, str]] = []

    def refusal(self, session_id: str, expiry: int) -> str | None:
        """Why a genuine, unexpired session is refused, or `None` when it is not."""
        if expiry <= self.floor:
            return BELOW_FLOOR.format(floor=self.floor)
        if session_id in self._ids:
            return LOGGED_OUT
        return None

    def end(self, session_id: str, expiry: int, now: float) -> bool:
        """Record a logout; whether it was recorded (an expired or already refused session
        needs no entry). Past the cap, the floor rises (see the module's docstring)."""
        self.prune(now)
        if expiry < now or self.refusal(session_id, expiry) is not None:
            return False
        self._ids[session_id] = expiry
        heapq.heappush(self._by_expiry, (expiry, session_id))
        if len(self._ids) > self.cap:
            self.raise_floor(self._by_expiry[0][0])
        return True

    def raise_floor(self, floor: int) -> None:
        """Refuse every session expiring at or before `floor`; the ids it covers go."""
        self.floor = max(self.floor, floor)
        self._drop_while(lambda expiry: expiry <= self.floor)

    def prune(self, now: float) -> None:
        """Forget the ids whose cookie has expired: `check_session` refuses those anyway."""
        self._drop_while(lambda expiry: expiry < now)

    def _drop_while(self, doomed: Callable[[int], bool]) -> None:
        while self._by_expiry and doomed(self._by_expiry[0][0]):
            _, session_id = heapq.heappop(self._by_expiry)
            del self._ids[session_id]

    def journal(self) -> str:
        """The whole record as journal lines: what a compaction writes."""
        lines = [f"f {self.floor}\n"] if self.floor else []
        lines += [f"e {expiry} {sid}\n" for sid, expiry in self._ids.items()]
        return "".join(lines)

    def __len__(self) -> int:
        return len(self._ids)


def replay(text: str, now: float, cap: int = MAX_REVOKED) -> tuple[EndedSessions, int, bool]:
    """The record a journal describes, its number of lines, and whether its end was torn by a
    crash (then the journal must be rewritten before anything is appended to it). Raises
    `Damaged` for anything else that is not a journal line. Pure."""
    record = EndedSessions(cap)
    *lines, tail = text.split("\n")
    torn = tail != ""
    if torn and (len(tail) >= LINE_MAX or not TORN_TAIL.fullmatch(tail)):
        raise Damaged(f"line {len(lines) + 1} is not a journal line")
    for number, line in enumerate(lines, start=1):
        match = LINE.fullmatch(line)
        if match is None:
            raise Damaged(f"line {number} is not a journal line")
        if match[3] is not None:
            record.raise_floor(int(match[3]))
        else:
            record.end(match[2], int(match[1]), now)
    return record, len(lines), torn


def from_old_json(text: str, now: float, cap: int = MAX_REVOKED) -> EndedSessions:
    """The record an earlier fsup kept (one JSON object of id -> expiry); `Damaged` if not."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise Damaged(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise Damaged("not a JSON object")
    record = EndedSessions(cap)
    for session_id, expiry in raw.items():
        if not ID.fullmatch(session_id) or type(expiry) is not int or expiry < 0:
            raise Damaged(f"entry {session_id[:70]!r} is not a session id and its expiry")
        record.end(session_id, expiry, now)
    return record


class RevokedSessions:
    """The record kept in memory and in its journal (`path`; none: memory only)."""

    def __init__(
        self,
        path: Path | None = None,
        now: float | None = None,
        *,
        cap: int = MAX_REVOKED,
        slack: int = COMPACT_SLACK,
    ) -> None:
        self._path = path
        self._lines = 0
        self._cap, self._slack = cap, slack
        self._warned_at = -float(WARN_EVERY_S)
        # What a journal this record wrote can reach (compaction bounds its lines).
        self.max_bytes = (2 * cap + slack + 2) * LINE_MAX
        self._record = self._load(time.time() if now is None else now)

    def _load(self, now: float) -> EndedSessions:
        if self._path is None:
            return EndedSessions(self._cap)
        try:
            with self._path.open("rb") as journal:
                data = journal.read(self.max_bytes + 1)
        except FileNotFoundError:
            return EndedSessions(self._cap)
        except OSError as exc:  # a directory, no permission: nothing tells what was logged out
            record = self._fail_closed(now, exc.strerror or str(exc))
            self._keep(record)
            return record
        rewrite = True
        try:
            if len(data) > self.max_bytes:
                raise Damaged(f"larger than {self.max_bytes} bytes")
            text = data.decode("ascii")
            if text.startswith("{"):
                record = from_old_json(text, now, self._cap)
            else:
                record, self._lines, rewrite = replay(text, now, self._cap)
        except (Damaged, UnicodeDecodeError) as exc:
            record = self._fail_closed(now, str(exc))
        if rewrite or self._lines > self._compact_at(record):
            self._keep(record)
        return record

    def _keep(self, record: EndedSessions) -> None:
        """Compact, or say why not: the record still holds in memory for this run."""
        try:
            self._compact(record)
        except OSError as exc:
            log.warning("cannot rewrite %s: %s", self._path, exc)

    def _fail_closed(self, now: float, why: str) -> EndedSessions:
        record = EndedSessions(self._cap)
        record.raise_floor(int(now) + SESSION_TTL_S)
        log.warning(
            "%s cannot be read (%s): every open session is ended; clients POST /api/v1/session "
            "again",
            self._path,
            why,
        )
        return record

    def _compact_at(self, record: EndedSessions) -> int:
        return 2 * len(record) + self._slack

    def _compact(self, record: EndedSessions) -> None:
        assert self._path is not None
        text = record.journal()
        write_private(self._path, text)
        self._lines = text.count("\n")

    def _append(self, text: str) -> None:
        assert self._path is not None
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            data = text.encode("ascii")
            if os.write(fd, data) != len(data):  # a regular file takes it whole, or raises
                raise OSError("short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        self._lines += text.count("\n")

    def refusal(self, session_id: str, expiry: int) -> str | None:
        """Why this genuine, unexpired session is refused (logged out, or below the floor)."""
        return self._record.refusal(session_id, expiry)

    def revoke(self, session_id: str, expiry: int, now: float | None = None) -> None:
        """End the session for good. Raises `FsupError` (500) when the logout cannot be
        written down: it holds in memory, but a restart of fsup would forget it."""
        record = self._record
        floor = record.floor
        moment = time.time() if now is None else now
        if not record.end(session_id, expiry, moment):
            return
        # Past the cap every logout may raise the floor: said once a minute, not each time.
        if record.floor != floor and moment - self._warned_at >= WARN_EVERY_S:
            self._warned_at = moment
            log.warning(
                "more than %d logged-out sessions: every session expiring at or before %d is ended",
                record.cap,
                record.floor,
            )
        if self._path is None:
            return
        line = f"e {expiry} {session_id}\n"
        if record.floor != floor:
            line += f"f {record.floor}\n"
        try:
            if self._lines + 2 > self._compact_at(record):
                self._compact(record)
            else:
                self._append(line)
        except OSError as exc:
            log.warning("cannot record a logout in %s: %s", self._path, exc)
            raise FsupError(
                "INTERNAL",
                "the session is ended, but the logout could not be written down "
                f"({exc.strerror or exc}): a restart of fsup would forget it",
            ) from None

    def clear(self) -> None:
        """Forget every entry and the floor: a token rotation has ended all sessions."""
        self._record = EndedSessions(self._record.cap)
        if self._path is not None:
            self._keep(self._record)

    @property
    def floor(self) -> int:
        return self._record.floor

    def __len__(self) -> int:
        return len(self._record)

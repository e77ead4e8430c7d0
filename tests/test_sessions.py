"""The record of ended sessions (`supervisor/http/sessions.py`): bounded, yet it never
accepts a logged-out cookie again (past the cap a floor ends the oldest sessions instead);
kept in an append-only journal (0600) that survives a restart and is compacted; a damaged,
oversized or unreadable journal ends every session. Time is passed in, never read."""

from __future__ import annotations

import json
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from supervisor.core.errors import FsupError
from supervisor.http.api_auth import SESSION_TTL_S
from supervisor.http.sessions import (
    LOGGED_OUT,
    MAX_REVOKED,
    EndedSessions,
    RevokedSessions,
    replay,
)

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def sid(number: int) -> str:
    return f"{number:064x}"


def test_past_the_cap_the_floor_rises_to_the_dropped_expiry() -> None:
    record = EndedSessions(cap=2)
    assert record.end(A, 110, now=100) and record.end(B, 120, now=100)
    assert record.end(C, 130, now=100)  # A, the nearest to expiry, makes room
    assert len(record) == 2 and record.floor == 110
    assert record.refusal(A, 110) is not None and "110" in (record.refusal(A, 110) or "")
    assert record.refusal(B, 120) == LOGGED_OUT and record.refusal(C, 130) == LOGGED_OUT
    # A session opened after the one dropped lives; one as old as it is ended.
    assert record.refusal(D, 111) is None and record.refusal(D, 110) is not None


def test_expired_entries_are_pruned_without_raising_the_floor() -> None:
    record = EndedSessions(cap=2)
    record.end(A, 110, now=100)
    record.end(B, 120, now=100)
    assert record.end(C, 130, now=115)  # A expired: pruned, no floor
    assert record.floor == 0 and len(record) == 2
    assert not record.end(D, 90, now=115)  # already expired: nothing to record
    assert not record.end(B, 120, now=115)  # already ended


def test_the_real_cap_bounds_memory_at_ten_thousand() -> None:
    record = EndedSessions()
    for number in range(MAX_REVOKED + 50):
        record.end(sid(number), 10_000 + number, now=0)
    assert len(record) == MAX_REVOKED and record.floor == 10_000 + 49
    assert all(record.refusal(sid(n), 10_000 + n) for n in range(MAX_REVOKED + 50))


def test_the_journal_is_0600_appended_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sessions.revoked"
    book = RevokedSessions(path, now=100, cap=2)
    book.revoke(A, 110, now=100)
    book.revoke(B, 120, now=100)
    assert path.read_text() == f"e 110 {A}\ne 120 {B}\n"  # one appended line per logout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    book.revoke(C, 130, now=100)  # past the cap: the floor goes to disk too
    assert path.read_text().endswith(f"e 130 {C}\nf 110\n")
    again = RevokedSessions(path, now=105, cap=2)  # a new fsup reads what the last one wrote
    assert again.floor == 110 and len(again) == 2
    for session_id, expiry in ((A, 110), (B, 120), (C, 130), (D, 110)):
        assert again.refusal(session_id, expiry) is not None
    assert again.refusal(D, 111) is None


def test_the_journal_is_compacted_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "sessions.revoked"
    book = RevokedSessions(path, now=0, cap=5, slack=4)
    sizes = []
    for number in range(200):
        book.revoke(sid(number), 1_000 + number, now=number)
        sizes.append(path.stat().st_size)
    # Never more than 2 * cap + slack lines of 80 bytes at most.
    assert max(sizes) <= (2 * 5 + 4) * 80 and len(set(sizes)) > 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = RevokedSessions(path, now=200, cap=5, slack=4)
    assert all(again.refusal(sid(n), 1_000 + n) for n in range(200))
    assert again.refusal(D, 1_000 + 200) is None


def test_clearing_forgets_the_floor_too(tmp_path: Path) -> None:
    path = tmp_path / "sessions.revoked"
    book = RevokedSessions(path, now=100, cap=1)
    book.revoke(A, 110, now=100)
    book.revoke(B, 120, now=100)
    assert book.floor == 110
    book.clear()  # a token rotation: every old session stopped verifying anyway
    assert book.floor == 0 and len(book) == 0 and path.read_text() == ""
    assert RevokedSessions(path, now=100).refusal(A, 110) is None


DAMAGED = [
    b"not a journal\n",
    b"e 110 " + b"a" * 63 + b"\n",
    b"f -1\n",
    b"e 110 " + b"A" * 64 + b"\n",
    "e 110 \u00e9\n".encode(),
    b"\xff\xfe\n",
    b"garbage without newline",
    b"[1, 2]",
    b'{"short": 1}',
    b'{"%s": "x"}' % (b"a" * 64),
    b"{broken json",
]


@pytest.mark.parametrize("content", DAMAGED)
def test_a_damaged_journal_ends_every_session(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "sessions.revoked"
    path.write_bytes(content)
    book = RevokedSessions(path, now=1_000)
    assert book.floor == 1_000 + SESSION_TTL_S  # every session opened until now is ended
    assert book.refusal(A, 1_000 + SESSION_TTL_S) is not None
    assert book.refusal(A, 1_001 + SESSION_TTL_S) is None  # one opened later lives
    # The journal is replaced by one that says so, 0600, and read back the same.
    assert path.read_text() == f"f {1_000 + SESSION_TTL_S}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert RevokedSessions(path, now=2_000).floor == 1_000 + SESSION_TTL_S


def test_an_oversized_journal_ends_every_session_unread(tmp_path: Path) -> None:
    path = tmp_path / "sessions.revoked"
    book = RevokedSessions(path, now=0, cap=2, slack=2)
    with path.open("w") as out:  # valid lines, but more than fsup ever writes
        out.writelines(f"e 5000 {sid(n)}\n" for n in range(book.max_bytes // 80 + 1))
    assert RevokedSessions(path, now=1_000, cap=2, slack=2).floor == 1_000 + SESSION_TTL_S


def test_an_unreadable_journal_ends_every_session(tmp_path: Path) -> None:
    path = tmp_path / "sessions.revoked"
    path.mkdir()  # a directory where the file should be: cannot be read nor rewritten
    book = RevokedSessions(path, now=1_000)
    assert book.floor == 1_000 + SESSION_TTL_S
    with pytest.raises(FsupError) as caught:  # the logout holds in memory, and says so
        book.revoke(A, 5_000 + SESSION_TTL_S, now=1_000)
    assert caught.value.code == "INTERNAL" and book.refusal(A, 5_000 + SESSION_TTL_S)


def test_a_journal_torn_by_a_crash_loses_only_the_unanswered_logout(tmp_path: Path) -> None:
    path = tmp_path / "sessions.revoked"
    path.write_text(f"e 110 {A}\ne 120 {B[:30]}")  # the crash cut the last append short
    book = RevokedSessions(path, now=100)
    assert book.floor == 0 and book.refusal(A, 110) == LOGGED_OUT and book.refusal(B, 120) is None
    assert path.read_text() == f"e 110 {A}\n"  # rewritten before anything is appended
    book.revoke(C, 130, now=100)
    assert replay(path.read_text(), now=100)[0].refusal(C, 130) == LOGGED_OUT


def test_the_json_record_of_an_earlier_fsup_is_carried_over(tmp_path: Path) -> None:
    path = tmp_path / "sessions.revoked"
    path.write_text(json.dumps({A: 110, B: 50}))
    book = RevokedSessions(path, now=100)
    assert book.floor == 0 and book.refusal(A, 110) == LOGGED_OUT and len(book) == 1
    assert path.read_text() == f"e 110 {A}\n"


def test_without_a_path_the_record_lives_in_memory() -> None:
    book = RevokedSessions(None, now=0)
    book.revoke(A, 110, now=100)
    assert book.refusal(A, 110) == LOGGED_OUT


class EndedSessionsMachine(RuleBasedStateMachine):
    """Sessions opened, logged out, checked, time passing and fsup restarting, with a record
    far smaller than the real one: a logged-out session is never accepted again while its
    cookie is unexpired, the floor never ends a session opened after every logged-out one it
    covers, and memory and the journal stay bounded."""

    CAP, SLACK, TTL = 3, 2, 50

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "sessions.revoked"
        self.now = 1_000
        self.book = self.reload()
        self.opened: dict[str, int] = {}
        self.logged_out: dict[str, int] = {}
        self.counter = 0

    def reload(self) -> RevokedSessions:
        return RevokedSessions(self.path, now=self.now, cap=self.CAP, slack=self.SLACK)

    @rule()
    def open_session(self) -> None:
        self.counter += 1
        self.opened[sid(self.counter)] = self.now + self.TTL

    @precondition(lambda self: bool(self.opened))
    @rule(data=st.data())
    def log_out(self, data: st.DataObject) -> None:
        session_id = data.draw(st.sampled_from(sorted(self.opened)))
        expiry = self.opened[session_id]
        if expiry < self.now or self.book.refusal(session_id, expiry) is not None:
            return  # the auth hook refuses it before a logout
        self.book.revoke(session_id, expiry, now=self.now)
        self.logged_out[session_id] = expiry

    @rule(seconds=st.integers(min_value=0, max_value=30))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds

    @rule()
    def restart(self) -> None:
        self.book = self.reload()

    @invariant()
    def logged_out_sessions_stay_refused(self) -> None:
        for session_id, expiry in self.logged_out.items():
            if expiry >= self.now:
                assert self.book.refusal(session_id, expiry) is not None

    @invariant()
    def the_floor_ends_no_session_newer_than_a_logged_out_one(self) -> None:
        floor = self.book.floor
        assert floor == 0 or floor in self.logged_out.values()

    @invariant()
    def bounded(self) -> None:
        assert len(self.book) <= self.CAP
        if self.path.exists():
            assert self.path.stat().st_size <= (2 * self.CAP + self.SLACK) * 80

    def teardown(self) -> None:
        self.dir.cleanup()


EndedSessionsMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
test_ended_sessions_machine = EndedSessionsMachine.TestCase


def test_journal_lines_are_never_longer_than_eighty_bytes() -> None:
    record = EndedSessions()
    record.end(A, 10**12 - 1, now=0)
    record.raise_floor(10**12 - 2)
    record.end(B, 10**12 - 1, now=0)
    assert max(len(line) + 1 for line in record.journal().splitlines()) == 80


def test_a_rising_floor_is_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    book = RevokedSessions(None, now=0, cap=1)
    with caplog.at_level("WARNING", logger="fsup.http"):
        for second in range(120):  # past the cap, every logout raises the floor
            book.revoke(sid(second), 1_000 + second, now=second)
    assert book.floor == 1_000 + 118
    assert sum("logged-out sessions" in r.getMessage() for r in caplog.records) == 2

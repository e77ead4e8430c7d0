"""End-to-end: two requests that race each other over HTTP (issue 17), on a real fsup with real
formations. Each race runs several rounds, the second request sent at a different offset after
the first (either order for the deletes), each round under a deadline:

- delete against restart, and delete against stop: the delete is answered (the formation is
  gone: 404, no store row, no process left), and the other request is answered too, with a
  value or a clear 4xx/503 (never a 500, never left hanging); no process is spawned after it;
- start against an update of a stopped formation: afterwards the formation is consistent: the
  stored pid is the live process's pid (what an fsup restarted after a crash adopts: checked
  with a SIGKILL of fsup at the end), and the version it reports and stores is the version
  that process runs (its FORMATION_VERSION);
- restart against a stop under way (issue 18's review): the stop is answered at once with
  OPERATION_CANCELLED, the restart with the formation running.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import Server, formation_processes, main_processes, nasty_bundle, wait_for

from supervisor.cli.client import ApiError, RpcClient

pytestmark = pytest.mark.e2e

GZIP = {"Content-Type": "application/gzip"}
# The rounds of a delete against another request: which is sent first, and the other's offset
# after it. A request sent a moment before the delete may find the formation (its lookup) and
# reach it once the delete has begun to stop it; one sent well before it is interrupted by it.
DELETE_ROUNDS = (
    ("delete", 0.0),
    ("delete", 0.02),
    ("other", 0.0),
    ("other", 0.001),
    ("other", 0.002),
    ("other", 0.004),
    ("other", 0.05),
)
# The update's bundle is extracted and validated before the formation sees it, and the switch
# of a stopped formation's version is quick: the start is sent at these fractions of the time
# the last update took, so that some rounds reach the formation while its update runs (and one
# in six at once: the start first, the update refused while it starts).
UPDATE_FRACTIONS = (0.0, 0.6, 0.75, 0.85, 0.9, 0.95)
ROUNDS_OF_UPDATES = 12
RACE_DEADLINE_S = 40.0  # a round's two answers (a stop takes at most stop.timeout, 3 s here)
CLEAR = {404, 409, 503}  # what a request that lost a race may answer


def _client(server: Server) -> RpcClient:
    assert server.client is not None
    return RpcClient(server.url, server.client.key_id, server.client.secret_key, timeout=60)


def _outcome(call: Callable[[], Any]) -> tuple[int, Any]:
    """(200, value) or (status, code)."""
    try:
        return 200, call()
    except ApiError as exc:
        return exc.status, exc.code


def _race(
    server: Server, first: tuple[str, str, bytes], second: tuple[str, str, bytes], offset: float
) -> tuple[tuple[int, Any], tuple[int, Any]]:
    """Send `first`, then `second` `offset` seconds later, each on its own connection; both
    answers within the deadline. `_race.took` is how long `first` took to its answer."""
    with _client(server) as one, _client(server) as two, ThreadPoolExecutor(2) as pool:
        began = time.monotonic()

        def send(client: RpcClient, request: tuple[str, str, bytes], delay: float) -> Any:
            time.sleep(delay)
            method, path, body = request
            answer = _outcome(lambda: client.call(method, path, body, GZIP if body else None))
            return answer, time.monotonic() - began

        a = pool.submit(send, one, first, 0.0)
        b = pool.submit(send, two, second, offset)
        (answer_a, took), (answer_b, _) = a.result(RACE_DEADLINE_S), b.result(RACE_DEADLINE_S)
        _race.took = took  # type: ignore[attr-defined]
        return answer_a, answer_b


def _stored(home: Path, formation_id: str) -> tuple[int | None, str] | None:
    """The store's (pid, current_version) of the formation, read as a restarted fsup would."""
    db = sqlite3.connect(f"file:{home / 'server' / 'state.db'}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute(
            "SELECT pid, current_version FROM formations WHERE id = ?", (formation_id,)
        ).fetchone()
    finally:
        db.close()
    return None if row is None else (row[0], row[1])


def _gone(server: Server, home: Path, formation_id: str) -> None:
    with pytest.raises(ApiError) as info:
        server.formation(formation_id)
    assert info.value.status == 404
    assert _stored(home, formation_id) is None
    wait_for(lambda: not formation_processes(home, formation_id), timeout=15)


@pytest.mark.parametrize("other", ["restart", "stop"])
def test_delete_against_a_lifecycle_request(server: Server, home: Path, other: str) -> None:
    seen: Counter[tuple[str, Any]] = Counter()
    for round_, (first, offset) in enumerate(DELETE_ROUNDS):
        formation_id = f"race-{other}-{round_}"
        server.rpc.deploy(nasty_bundle(formation_id))
        delete = ("DELETE", f"/rpc/formations/{formation_id}", b"")
        lifecycle = ("POST", f"/rpc/formations/{formation_id}/{other}", b"")
        if first == "delete":
            deleted, answer = _race(server, delete, lifecycle, offset)
        else:
            answer, deleted = _race(server, lifecycle, delete, offset)
        assert deleted == (200, {"id": formation_id, "deleted": True}), deleted
        status, value = answer
        assert status == 200 or status in CLEAR, answer
        if status == 200:
            assert value["status"] == ("running" if other == "restart" else "stopped"), value
        seen[f"{first} first", _said(answer)] += 1
        _gone(server, home, formation_id)
    print(f"delete against {other}: {dict(seen)}")
    _no_traceback(home)


def test_a_restart_during_a_stop_answers_the_stop(server: Server, home: Path) -> None:
    """A restart that overtakes a stop under way (the process ignores SIGTERM: the stop waits
    its 3 s timeout) answers the stop at once with OPERATION_CANCELLED, and the restart with
    the formation running (before issue 18's review, the stop's client hung)."""
    formation_id = "race-stop-restart"
    server.rpc.deploy(nasty_bundle(formation_id, mode="stubborn"))
    stop = ("POST", f"/rpc/formations/{formation_id}/stop", b"")
    restart = ("POST", f"/rpc/formations/{formation_id}/restart", b"")
    stopped, restarted = _race(server, stop, restart, 0.5)
    assert stopped == (409, "OPERATION_CANCELLED"), stopped
    assert restarted[0] == 200 and restarted[1]["status"] == "running", restarted
    _consistent(server, home, formation_id)
    _no_traceback(home)


def test_start_against_an_update_of_a_stopped_formation(server: Server, home: Path) -> None:
    formation_id = "race-update"
    server.rpc.deploy(nasty_bundle(formation_id))
    seen: Counter[tuple[Any, Any]] = Counter()
    took = 0.05  # the last update's time to its answer: the start is sent within it
    for round_ in range(ROUNDS_OF_UPDATES):
        stopped = _outcome(lambda: server.rpc.call("POST", f"/rpc/formations/{formation_id}/stop"))
        assert stopped[0] == 200 or stopped == (409, "FORMATION_NOT_RUNNING"), stopped
        version = f"1.{round_ + 1}.0"
        bundle = nasty_bundle(formation_id, version=version)
        updated, started = _race(
            server,
            ("PUT", f"/rpc/formations/{formation_id}", bundle),
            ("POST", f"/rpc/formations/{formation_id}/start", b""),
            took * UPDATE_FRACTIONS[round_ % len(UPDATE_FRACTIONS)],
        )
        if updated[0] == 200 and updated[1]["status"] == "stopped":
            took = _race.took  # type: ignore[attr-defined]
        assert updated[0] == 200 or updated[0] in CLEAR, updated
        assert started[0] == 200 or started[0] in CLEAR, started
        if updated[0] == 200:
            assert updated[1]["version"] == version
        seen[(_said(updated), _said(started))] += 1
        _consistent(server, home, formation_id)
    print(f"update against start: {dict(seen)}")
    _no_traceback(home)
    _adopted_after_a_crash(server, home, formation_id)


def _adopted_after_a_crash(server: Server, home: Path, formation_id: str) -> None:
    """What the store says runs is what a restarted fsup adopts: the same pid, the same
    version, no second process."""
    shown = server.formation(formation_id)
    if shown["status"] != "running":
        shown = server.rpc.call("POST", f"/rpc/formations/{formation_id}/start")
    server.kill()
    server.start()
    adopted = wait_for(
        lambda: (f := server.formation(formation_id))["status"] == "running" and f, timeout=30
    )
    assert (adopted["pid"], adopted["version"]) == (shown["pid"], shown["version"])
    _consistent(server, home, formation_id)


def _said(outcome: tuple[int, Any]) -> Any:
    return 200 if outcome[0] == 200 else outcome[1]


def _no_traceback(home: Path) -> None:
    """No race made a bug of fsup's (a traceback), nor left an actor that had to be ended."""
    for log in (home / "fsup-test.log", home / "server" / "logs" / "fsup.log"):
        text = log.read_text(errors="replace") if log.exists() else ""
        assert "Traceback" not in text and "did not end with its shutdown" not in text, log


def _consistent(server: Server, home: Path, formation_id: str) -> None:
    """Settled (running or stopped), the formation reports, stores and runs one version and
    one pid."""
    shown = wait_for(
        lambda: (f := server.formation(formation_id))["status"] in ("running", "stopped") and f,
        timeout=30,
    )
    pid, version = shown["pid"], shown["version"]
    mains = [p.pid for p in main_processes(home, formation_id)]
    assert _stored(home, formation_id) == (pid, version), shown
    if shown["status"] == "stopped":
        assert pid is None and mains == [], shown
        return
    assert mains == [pid], (mains, shown)
    assert psutil.Process(pid).environ()["FORMATION_VERSION"] == version

"""End-to-end: one `fsup serve` per home (issue 17).

A second server on a busy home exits 1 at once, naming the home and the holder's pid, and
changes nothing: the first keeps serving the same processes, its store and files untouched.
A lock left by a killed server never blocks the next one, which adopts the children (they do
not hold the lock: it is not inherited). A lock path that is not fsup's plain file (a folder,
a symbolic link, a hard link, a FIFO, a file fsup may not open) is refused with what to do,
and nothing in the home changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fsup_processes import no_fsup_left  # noqa: F401 - an autouse fixture
from helpers import Server, main_processes, nasty_bundle, run_to_end, wait_for
from port_blocks import PORT_RANGE

pytestmark = pytest.mark.e2e

# Measured about 0.2 s: a deadline for a loaded machine (a server that waited for the lock
# instead of refusing would wait for ever), not a speed check.
SECOND_EXIT_BOUND_S = 20.0


def serve_once(home: Path, *prefix: str) -> tuple[int, str, float]:
    """Run `fsup serve` on `home` to its end (it is expected to refuse at once); its exit
    status, stderr and how long it ran. The test fails if it runs past `SECOND_EXIT_BOUND_S`."""
    env = {**os.environ, "MUXI_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "supervisor", "serve", "--port", "0", "--port-range", PORT_RANGE]
    began = time.monotonic()
    what = "the second server did not exit"
    done = run_to_end([*prefix, *argv], env, SECOND_EXIT_BOUND_S, what)
    return done.returncode, done.stderr, time.monotonic() - began


def store_rows(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The store's formation and audit rows, read without writing."""
    db = sqlite3.connect(f"file:{home / 'server' / 'state.db'}?mode=ro", uri=True)
    try:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()  # noqa: S608
            for table in ("formations", "versions", "audit")
        }
    finally:
        db.close()


def settled_store(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The store once the audit rows of the last calls are flushed (no change for 1 s)."""
    last = store_rows(home)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(1.0)
        rows = store_rows(home)
        if rows == last:
            return rows
        last = rows
    raise AssertionError("the store kept changing")


def file_state(path: Path) -> tuple[bytes, int, int]:
    info = path.stat()
    return path.read_bytes(), info.st_mtime_ns, info.st_mode


def test_a_second_server_on_a_busy_home_exits_at_once_and_changes_nothing(
    server: Server, home: Path
) -> None:
    deployed = server.rpc.deploy(nasty_bundle("busy"))
    wait_for(lambda: server.formation("busy")["status"] == "running")
    assert server.proc is not None
    assert (home / "server" / "lock").read_text() == f"{server.proc.pid}\n"
    files = ["config.yaml", "credentials.json", "api.token", "lock"]
    before_files = {name: file_state(home / "server" / name) for name in files}
    before_store = settled_store(home)
    before_pids = [p.pid for p in main_processes(home, "busy")]
    assert before_pids == [deployed["pid"]]

    code, err, took = serve_once(home)

    assert code == 1, err
    assert f"the home {home} is in use by another fsup serve (pid {server.proc.pid})" in err
    assert "Traceback" not in err
    print(f"second fsup serve refused in {took:.3f} s")
    # The first one is untouched: same processes, same store, same files, still serving.
    assert server.proc.poll() is None
    assert [p.pid for p in main_processes(home, "busy")] == before_pids
    assert store_rows(home) == before_store
    assert {name: file_state(home / "server" / name) for name in files} == before_files
    assert httpx.get(f"{server.url}/health", trust_env=False).status_code == 200
    shown = server.formation("busy")
    assert (shown["status"], shown["pid"]) == ("running", deployed["pid"])


def test_a_killed_servers_lock_does_not_block_the_next_which_adopts_the_children(
    server: Server, home: Path
) -> None:
    deployed = server.rpc.deploy(nasty_bundle("orphan"))
    lock = str(home / "server" / "lock")
    for proc in main_processes(home, "orphan"):
        assert lock not in [f.path for f in proc.open_files()], "a formation holds the lock"

    server.kill()
    assert [p.pid for p in main_processes(home, "orphan")] == [deployed["pid"]]

    server.start()
    assert server.proc is not None
    assert (home / "server" / "lock").read_text() == f"{server.proc.pid}\n"
    adopted = wait_for(
        lambda: (shown := server.formation("orphan"))["status"] == "running" and shown
    )
    assert adopted["pid"] == deployed["pid"]
    assert [p.pid for p in main_processes(home, "orphan")] == [deployed["pid"]]


def test_a_lock_left_with_a_dead_servers_pid_is_taken_over(home: Path) -> None:
    (home / "server").mkdir()
    (home / "server" / "lock").write_text("4194303\nleft over by an older server\n")
    srv = Server(home).start()
    try:
        assert srv.proc is not None
        assert (home / "server" / "lock").read_text() == f"{srv.proc.pid}\n"
    finally:
        assert srv.stop() == 0, srv.log_tail()


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under `root` (links not followed): its type and mode, size, mtime, and a
    digest of a file's bytes or a link's target."""
    found: dict[str, tuple[Any, ...]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        if path.is_symlink():
            what: str = os.readlink(path)
        elif path.is_file():
            try:
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            except PermissionError:
                what = "unreadable"
        else:
            what = ""
        found[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns, what)
    return found


def _folder(lock: Path, outside: Path) -> None:
    lock.mkdir()
    (lock / "inside").write_text("kept\n")


def _link_to_a_file(lock: Path, outside: Path) -> None:
    (outside / "precious").write_text("not fsup's\n")
    lock.symlink_to(outside / "precious")


def _dangling_link(lock: Path, outside: Path) -> None:
    lock.symlink_to(outside / "not-there")


def _hard_link(lock: Path, outside: Path) -> None:
    (outside / "precious").write_text("not fsup's\n")
    lock.hardlink_to(outside / "precious")


def _fifo(lock: Path, outside: Path) -> None:
    os.mkfifo(lock, 0o600)


def _unreadable(lock: Path, outside: Path) -> None:
    lock.write_text("12345\n")
    lock.chmod(0o000)


def _read_only(lock: Path, outside: Path) -> None:
    lock.write_text("12345\n")
    lock.chmod(0o400)


BAD_LOCKS = {
    "folder": (_folder, ["is a folder", "rmdir"]),
    "link-to-a-file": (_link_to_a_file, ["symbolic link", "Remove the link"]),
    "dangling-link": (_dangling_link, ["symbolic link", "Remove the link"]),
    "hard-link": (_hard_link, ["is a hard link", "Remove it"]),
    "fifo": (_fifo, ["not a plain file", "Remove it"]),
    "unreadable": (_unreadable, ["permission denied", "chmod 600"]),
    "read-only": (_read_only, ["permission denied", "chmod 600"]),
}


def without_permission_override() -> list[str]:
    """A command prefix under which the server is refused what its file modes refuse. Root
    bypasses file modes: it runs without the two capabilities that let it (`setpriv`)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot refuse anything")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


@pytest.mark.parametrize("kind", list(BAD_LOCKS))
def test_a_lock_path_that_is_not_a_plain_file_is_refused_and_nothing_changes(
    kind: str, home: Path, tmp_path: Path
) -> None:
    make, words = BAD_LOCKS[kind]
    outside = tmp_path / "outside"
    outside.mkdir()
    (home / "server").mkdir(mode=0o700)
    lock = home / "server" / "lock"
    make(lock, outside)
    prefix = without_permission_override() if kind in ("unreadable", "read-only") else []
    before, before_outside = snapshot(home), snapshot(outside)

    code, err, _ = serve_once(home, *prefix)

    assert code == 1, err
    assert err.startswith("fsup: ") and str(lock) in err, err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err
    assert snapshot(home) == before
    assert snapshot(outside) == before_outside

"""The home's lock (`supervisor/storage/server_lock.py`) in-process: one holder, its pid in the
file, the refusal's message, released on close, and no descriptor a child could inherit.
(`flock` locks of two open file descriptions conflict within one process too, so a second
`acquire` here is a second server as far as the lock goes.) End-to-end with real servers:
tests/test_e2e_server_lock.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from supervisor.storage import server_lock
from supervisor.storage.home import Home
from supervisor.storage.server_lock import ServerLock, ServerLockError, holder_pid


def test_one_holder_its_pid_written_a_second_refused_with_home_and_pid(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    with ServerLock.acquire(home) as lock:
        assert lock.path == home.lock
        assert home.lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(ServerLockError) as refused:
            ServerLock.acquire(home)
        assert str(refused.value) == (
            f"the home {home.root} is in use by another fsup serve (pid {os.getpid()}); "
            "stop that one first, or set MUXI_HOME to another home"
        )
        assert home.lock.read_text() == f"{os.getpid()}\n"  # the refused one wrote nothing
    with ServerLock.acquire(home):  # released on close
        pass


def test_a_longer_pid_left_over_is_replaced_whole(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.server.mkdir()
    home.lock.write_text("4194303\nsomething an older server left\n")
    with ServerLock.acquire(home):
        assert home.lock.read_text() == f"{os.getpid()}\n"


def test_a_holder_whose_pid_is_not_written_or_is_dead_is_named_as_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_lock, "PID_WAIT_S", 0.05)
    home = Home(tmp_path)
    with ServerLock.acquire(home):
        for content in ("", "4194303\n", "-1\n", "0\n", "pid\n", "9" * 40 + "\n"):
            home.lock.write_text(content)
            with pytest.raises(ServerLockError, match=r"\(pid unknown\)"):
                ServerLock.acquire(home)


def test_holder_pid_reads_the_first_line_of_a_live_pid(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_text(f"{os.getpid()}\n123")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert holder_pid(fd, wait=0) == os.getpid()
    finally:
        os.close(fd)


CHILD_FDS = """
import os
for fd in os.listdir("/proc/self/fd"):
    try:
        print(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
"""


def test_the_lock_descriptor_is_not_inherited_by_a_child(tmp_path: Path) -> None:
    """Even a child started with `close_fds=False` does not get it (O_CLOEXEC): a formation
    that outlives its fsup must not hold the home's lock."""
    home = Home(tmp_path)
    with ServerLock.acquire(home):
        mine = [f.path for f in psutil.Process().open_files()]
        assert str(home.lock) in mine  # what the child is checked for
        child = subprocess.run(
            [sys.executable, "-c", CHILD_FDS],
            close_fds=False,
            capture_output=True,
            text=True,
            check=True,
        )
    assert str(home.lock) not in child.stdout.splitlines()


def test_a_server_folder_that_cannot_be_created_is_a_message(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder\n")
    with pytest.raises(ServerLockError, match="cannot create"):
        ServerLock.acquire(Home(tmp_path / "file"))

"""The keeper's files: append, rotate by renaming (no copy, no truncate), remove when no
backup is kept, shared by the pairs of one version, and a failed rotation never raises."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from supervisor.runtime.keeper import files
from supervisor.runtime.keeper.files import LogFiles


def test_rotation_renames_and_keeps_n_backups(tmp_path: Path) -> None:
    files = LogFiles()
    told: list[str] = []
    log = files.acquire(tmp_path / "f1", "1.0.0", max_bytes=10, backups=2)
    for word in (b"first-line\n", b"second-line\n", b"third-line\n", b"now\n"):
        log.write(word, told.append)
    folder = tmp_path / "f1"
    assert (folder / "1.0.0.log").read_bytes() == b"now\n"
    assert (folder / "1.0.0.log.1").read_bytes() == b"third-line\n"
    assert (folder / "1.0.0.log.2").read_bytes() == b"second-line\n"
    assert not (folder / "1.0.0.log.3").exists()
    assert told == []
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "1.0.0.log").stat().st_mode) == 0o600
    files.close_all()


def test_no_backup_removes_the_full_file(tmp_path: Path) -> None:
    files = LogFiles()
    log = files.acquire(tmp_path, "2.0.0", max_bytes=5, backups=0)
    log.write(b"123456\n", print)
    log.write(b"ab\n", print)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.0.0.log"]
    assert (tmp_path / "2.0.0.log").read_bytes() == b"ab\n"
    files.close_all()


def test_an_existing_file_is_appended_to_and_counted(tmp_path: Path) -> None:
    (tmp_path / "1.0.0.log").write_bytes(b"x" * 8)
    files = LogFiles()
    log = files.acquire(tmp_path, "1.0.0", max_bytes=10, backups=1)
    log.write(b"yy\n", print)
    assert (tmp_path / "1.0.0.log.1").read_bytes() == b"x" * 8 + b"yy\n"
    files.close_all()


def test_pairs_of_one_version_share_its_file(tmp_path: Path) -> None:
    files = LogFiles()
    first = files.acquire(tmp_path, "1.0.0", max_bytes=100, backups=1)
    second = files.acquire(tmp_path, "1.0.0", max_bytes=50, backups=4)
    other = files.acquire(tmp_path, "1.1.0", max_bytes=100, backups=1)
    assert first is second and first is not other and len(files) == 2
    assert (first.max_bytes, first.backups) == (50, 4)  # the latest pair's limits
    first.write(b"a\n", print)
    second.write(b"b\n", print)
    files.release(first)
    assert len(files) == 2
    files.release(second)
    files.release(other)
    assert len(files) == 0
    assert (tmp_path / "1.0.0.log").read_bytes() == b"a\nb\n"


def test_a_rotation_that_fails_is_told_and_writing_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    files = LogFiles()
    log = files.acquire(folder, "1.0.0", max_bytes=4, backups=1)
    (folder / "1.0.0.log").unlink()
    folder.rmdir()  # a deleted formation whose grandchild still writes
    told: list[str] = []
    log.write(b"12345\n", told.append)
    log.write(b"6\n", told.append)  # not retried until max_bytes more were written
    assert len(told) == 1 and "cannot rotate" in told[0]
    log.write(b"7890\n", told.append)
    assert len(told) == 2
    files.close_all()


def test_a_write_that_fails_midway_is_cut_back_to_whole_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk may take half a batch: the torn line would be glued to the next one."""
    told: list[str] = []
    log_file = LogFiles().acquire(tmp_path, "1.0.0", 10**6, 1)
    log_file.write(b"whole\n", told.append)
    real_write = files.os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        monkeypatch.setattr(files.os, "write", failing)
        return real_write(fd, bytes(data[:3]))

    def failing(fd: int, data: bytes | memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "write", half_then_full)
    log_file.write(b"torn line\n", told.append)
    monkeypatch.setattr(files.os, "write", real_write)
    log_file.write(b"next\n", told.append)
    assert (tmp_path / "1.0.0.log").read_bytes() == b"whole\nnext\n"
    assert any("No space left" in message for message in told)


def test_a_file_removed_under_a_pair_is_opened_anew_for_the_next(tmp_path: Path) -> None:
    """A formation deleted and deployed again while a pair of the old one still writes: the
    new pair's lines must land where readers look, not in the removed file."""
    files_ = LogFiles()
    old = files_.acquire(tmp_path / "web", "1.0.0", 10**6, 1)
    shutil.rmtree(tmp_path / "web")
    new = files_.acquire(tmp_path / "web", "1.0.0", 10**6, 1)
    assert new is old
    new.write(b"after\n", lambda message: None)
    assert (tmp_path / "web" / "1.0.0.log").read_bytes() == b"after\n"

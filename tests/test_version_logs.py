"""A formation's log files by version are pruned with the versions, but the last failed
updates' stay (they say what went wrong), and the legacy files are never touched."""

from __future__ import annotations

import os
from pathlib import Path

from supervisor.storage import version_logs


def make(log_dir: Path, name: str, mtime: float) -> Path:
    path = log_dir / name
    path.write_text("x\n")
    os.utime(path, (mtime, mtime))
    return path


def test_files_of_versions_gone_are_removed_but_the_last_failed_ones(tmp_path: Path) -> None:
    for name, mtime in [
        ("1.0.0.log", 10),
        ("1.0.0.log.1", 5),
        ("1.1.0.log", 20),  # stored
        ("1.2.0-rc.1.log", 30),  # failed update, newest
        ("1.2.0-rc.2.log", 25),  # failed update
        ("0.9.0.log", 1),  # pruned long ago
        ("stdout.log", 1),
        ("stderr.log.2", 1),
        ("notes.txt", 1),
    ]:
        make(tmp_path, name, mtime)
    removed = version_logs.prune(tmp_path, kept={"1.1.0"}, failed_kept=2)
    assert sorted(removed) == ["0.9.0", "1.0.0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "1.1.0.log",
        "1.2.0-rc.1.log",
        "1.2.0-rc.2.log",
        "notes.txt",
        "stderr.log.2",
        "stdout.log",
    ]


def test_a_missing_folder_is_nothing_to_prune(tmp_path: Path) -> None:
    assert version_logs.prune(tmp_path / "gone", kept=set()) == []


def test_the_versions_on_disk_are_grouped_with_their_backups(tmp_path: Path) -> None:
    for name in ("2.0.0.log", "2.0.0.log.1", "2.0.0.log.12", "2.0.0+build.5.log"):
        make(tmp_path, name, 1)
    found = version_logs.versions_on_disk(tmp_path)
    assert {v: sorted(p.name for p in files) for v, files in found.items()} == {
        "2.0.0": ["2.0.0.log", "2.0.0.log.1", "2.0.0.log.12"],
        "2.0.0+build.5": ["2.0.0+build.5.log"],
    }

"""Bounding a formation's log files by version: the files of versions that are gone go too.

The log keeper writes one file per version (`<version>.log` and its rotated `.log.N`), so a
formation updated a hundred times would keep a hundred sets. A version's files go when the
version itself is pruned; those of versions that never became stored ones or were removed
(a failed update's) are evidence of what went wrong, so the newest few of them stay.
"""

from __future__ import annotations

from pathlib import Path

from supervisor.core.cri import STREAMS
from supervisor.storage.log_files import VERSION_FILE

# The failed updates whose logs stay, newest first by their last write.
FAILED_KEPT = 2


def versions_on_disk(log_dir: Path) -> dict[str, list[Path]]:
    """The keeper's files in `log_dir`, by version (the legacy stdout/stderr files aside)."""
    found: dict[str, list[Path]] = {}
    try:
        entries = list(log_dir.iterdir())
    except FileNotFoundError:
        return found
    for path in entries:
        matched = VERSION_FILE.fullmatch(path.name)
        if matched is None or matched[1] in STREAMS:
            continue
        found.setdefault(matched[1], []).append(path)
    return found


def prune(log_dir: Path, kept: set[str], failed_kept: int = FAILED_KEPT) -> list[str]:
    """Remove the files of every version not in `kept` but the `failed_kept` written last;
    return the versions removed. A file that vanishes meanwhile is no error."""
    others = {v: files for v, files in versions_on_disk(log_dir).items() if v not in kept}
    by_age = sorted(others, key=lambda v: _last_write(others[v]), reverse=True)
    removed = by_age[failed_kept:]
    for version in removed:
        for path in others[version]:
            path.unlink(missing_ok=True)
    return removed


def _last_write(files: list[Path]) -> float:
    newest = 0.0
    for path in files:
        try:
            newest = max(newest, path.stat().st_mtime)
        except FileNotFoundError:
            continue
    return newest

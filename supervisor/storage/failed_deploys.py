"""What a failed first deploy leaves behind: its log, kept under the home once the formation
is removed, so that the user can still read why it failed.

A first deploy whose process never gets healthy is undone (the id is free again for the fixed
code), but its stdout and stderr are moved to `logs/failed-deploys/<id>/` with a
`failed-deploy.json` saying when, which version and what error. `GET .../logs` of an id that
does not exist answers with them. They are kept until the same id is deployed again (the new
deploy clears them, failing or not) or until `KEPT_MAX` newer failed deploys push them out;
each stream is cut to its last `KEEP_BYTES` (rotated copies dropped), so the whole is bounded
by `KEPT_MAX x 2 x KEEP_BYTES`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

# Failed deploys kept (their folders), and bytes kept of each of their files.
KEPT_MAX = 20
KEEP_BYTES = 1024 * 1024
META = "failed-deploy.json"


def keep(log_dir: Path, kept_dir: Path, meta: dict[str, Any]) -> None:
    """Move the formation's log folder to `kept_dir` (replacing an older one), cut its files
    to their last `KEEP_BYTES`, write `meta` beside them, and drop the oldest kept folders
    beyond `KEPT_MAX`. Runs in a worker thread, after the formation's processes are gone."""
    clear(kept_dir)
    kept_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        log_dir.rename(kept_dir)
    except FileNotFoundError:  # it never wrote a line (or never spawned)
        kept_dir.mkdir(mode=0o700)
    for path in kept_dir.iterdir():
        if path.suffix.lstrip(".").isdigit():  # a rotated copy: older than the current file
            path.unlink(missing_ok=True)
        elif path.is_file() and path.stat().st_size > KEEP_BYTES:
            _keep_end(path)
    (kept_dir / META).write_text(json.dumps(meta, sort_keys=True) + "\n")
    prune(kept_dir.parent, KEPT_MAX)


def _keep_end(path: Path) -> None:
    """Keep the last `KEEP_BYTES` of `path`, from the first whole line in them."""
    with open(path, "rb") as handle:
        handle.seek(-KEEP_BYTES, os.SEEK_END)
        data = handle.read()
    cut = data.find(b"\n")
    path.write_bytes(data[cut + 1 :] if 0 <= cut < len(data) - 1 else data)


def prune(root: Path, keep_count: int) -> None:
    """Remove the oldest kept folders (by when they were kept) beyond `keep_count`."""
    folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    if len(folders) <= keep_count:
        return
    folders.sort(key=_kept_at)
    for folder in folders[: len(folders) - keep_count]:
        clear(folder)


def _kept_at(folder: Path) -> float:
    try:
        return (folder / META).stat().st_mtime
    except FileNotFoundError:
        return 0.0  # half-written or foreign: the first to go


def clear(kept_dir: Path) -> None:
    shutil.rmtree(kept_dir, ignore_errors=True)


def read_meta(kept_dir: Path) -> dict[str, Any] | None:
    """What `keep` wrote about a failed deploy, or None when nothing is kept for it."""
    try:
        meta = json.loads((kept_dir / META).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None

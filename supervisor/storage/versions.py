"""A formation's versions on disk: install, carry runtime state across, remove, choose.

Runtime state (`data/` and `memory.db`) lives in the running version's folder, because that
is the process's working directory. An update copies it into the new version's folder before
the new process starts; a rollback copies it back. The copy is taken while the old process
still runs (it keeps serving until the swap), so writes it makes during the update's health
check are not carried over. Blocking I/O: callers run these in a worker thread.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import IO

from supervisor.core.version_order import below

RUNTIME_STATE = ("data", "memory.db")
# Versions kept after an update: the current one and this many older ones to roll back to.
KEEP_OLDER = 2


def install(staged: Path, version_dir: Path) -> None:
    """Move a staged bundle into place, replacing an earlier install of the same version."""
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staged.rename(version_dir)


def carry_runtime_state(source: Path, target: Path) -> list[str]:
    """Copy `data/` and `memory.db` from `source` to `target`, replacing what `target` has.
    Returns the names carried."""
    carried = []
    for name in RUNTIME_STATE:
        src, dst = source / name, target / name
        if not src.exists():
            continue
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True)
        else:
            shutil.copy2(src, dst)
        carried.append(name)
    return carried


def remove(version_dir: Path) -> None:
    shutil.rmtree(version_dir, ignore_errors=True)


def previous(versions: list[str], current: str) -> str | None:
    """The version a rollback goes to: the highest one below `current` by SemVer precedence
    (of versions equal in precedence, the last in `versions`, i.e. the newest stored). A
    version equal to `current` in precedence (another build of it) is not below it."""
    older = below(versions, current)
    return older[-1] if older else None


def to_prune(versions: list[str], current: str) -> list[str]:
    """After an update: everything but `current` and the `KEEP_OLDER` versions below it. Other
    builds of `current` (equal precedence) go, and so does anything that is not a version."""
    keep = {current, *below(versions, current)[-KEEP_OLDER:]}
    return [v for v in versions if v not in keep]


def zip_version(version_dir: Path, with_state: bool) -> IO[bytes]:
    """A zip of a version's folder, rewound, in a temporary file (spilled to disk past 8 MiB).
    Runtime state (`data/`, `memory.db`) is left out unless `with_state`."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 - returned
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(version_dir):
            relative = Path(root).relative_to(version_dir)
            if not with_state and relative == Path("."):
                dirs[:] = [d for d in dirs if d not in RUNTIME_STATE]
            dirs.sort()
            for name in sorted(files):
                if not with_state and relative == Path(".") and name in RUNTIME_STATE:
                    continue
                path = Path(root) / name
                if path.is_symlink() or not path.is_file():
                    continue
                archive.write(path, str(relative / name))
    spool.seek(0)
    return spool

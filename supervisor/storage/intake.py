"""Intake: turn an uploaded bundle into a staged, validated formation folder.

Everything here happens before any process starts, so a bad bundle costs nothing but a
temporary folder (removed on any error).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import trio

from supervisor.core.errors import FsupError
from supervisor.core.manifest import (
    MAX_MANIFEST_BYTES,
    FormationSpec,
    RestartSpec,
    invalid,
    parse_manifest,
)
from supervisor.storage.bundles import BundleLimits, extract_bundle

MANIFEST_NAME = "formation.yaml"
# Never packed from a source folder (`fsup serve --deploy`, the CLI): anywhere in the tree...
PACK_EXCLUDES = frozenset({".git", "__pycache__", "node_modules", "logs"})
# ...and at the top, the formation's runtime state, which a deploy must not overwrite.
PACK_EXCLUDES_TOP = frozenset({"data", "memory.db"})


@dataclass(frozen=True)
class Staged:
    dir: Path
    spec: FormationSpec
    manifest: bytes


def _extract(data: bytes, staging_root: Path, limits: BundleLimits) -> Path:
    staged = staging_root / uuid.uuid4().hex
    staged.mkdir(parents=True, mode=0o700)
    try:
        extract_bundle(data, staged, limits)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _validate(staged: Path, defaults: RestartSpec) -> Staged:
    manifest_path = staged / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FsupError(
            "INVALID_BUNDLE",
            f"the bundle has no {MANIFEST_NAME} at its top (or in its single top folder)",
        )
    with manifest_path.open("rb") as source:
        # One byte over the cap is enough for parse_manifest to refuse it: a 500 MB
        # formation.yaml is never read whole.
        manifest = source.read(MAX_MANIFEST_BYTES + 1)
    return Staged(staged, parse_manifest(manifest, defaults), manifest)


async def extract(data: bytes, staging_root: Path, limits: BundleLimits) -> Path:
    """Unpack a bundle into a fresh staging folder (in a worker thread)."""
    return await trio.to_thread.run_sync(_extract, data, staging_root, limits)


async def validate(staged: Path, defaults: RestartSpec) -> Staged:
    """Read and validate the staged folder's formation.yaml."""
    return await trio.to_thread.run_sync(_validate, staged, defaults)


def resolve_command(spec: FormationSpec, version_dir: Path, path_env: str | None) -> str:
    """Find the executable the command names, as the spawn will (a relative path is taken in
    the version folder, a bare name on PATH). Raise `INVALID_FORMATION` when it is missing."""
    program = spec.command[0]
    if "/" in program:
        candidate = Path(program) if os.path.isabs(program) else version_dir / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        raise invalid("command[0]", f"{program!r} is not an executable file in the bundle")
    found = shutil.which(program, path=path_env)
    if found is None:
        raise invalid("command[0]", f"{program!r} was not found on the server's PATH")
    return found


def discard(staged: Path) -> None:
    """Remove a staging folder (a no-op once the fleet has moved it into place)."""
    shutil.rmtree(staged, ignore_errors=True)


def pack_folder(folder: Path) -> bytes:
    """A `.tar.gz` of a formation folder, leaving out `.git`, `__pycache__`, `*.pyc`, `.env*`,
    `node_modules`, logs (`logs/`, `*.log`), links (a bundle may not hold them) and the
    runtime state at its top (`data/`, `memory.db`)."""
    buffer = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        inside = Path(info.name).parts[1:]
        if any(p in PACK_EXCLUDES or p.startswith(".env") for p in inside):
            return None
        if inside and inside[0] in PACK_EXCLUDES_TOP:
            return None
        if info.name.endswith((".pyc", ".log")) or info.issym() or info.islnk():
            return None
        return info

    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=folder.name, filter=keep)
    return buffer.getvalue()

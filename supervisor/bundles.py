"""Safe unpacking of formation bundles (`.tar.gz` or `.zip`).

A bundle comes from the network, so nothing in it is trusted: every member name is checked
(no absolute paths, no `..`, no drive letters or backslashes), only regular files and folders
are accepted (no symlinks, hard links, devices or FIFOs), and the member count, the unpacked
size and the compression ratio are bounded before a byte is written. One top-level folder, if
it holds everything, is stripped, so `tar czf app.tar.gz app/` works as people expect.

This module does blocking I/O; callers run it in a worker thread.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import FsupError

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
COPY_CHUNK = 64 * 1024


@dataclass(frozen=True)
class BundleLimits:
    max_members: int = 10_000
    max_unpacked_bytes: int = 512 * 1024 * 1024
    max_ratio: float = 100.0
    # Below this unpacked size the ratio is not checked: a small text bundle compresses well
    # and cannot be a bomb.
    ratio_floor_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class _Member:
    name: PurePosixPath
    is_dir: bool
    size: int
    executable: bool
    handle: object  # the TarInfo or ZipInfo, to open its data


_Reader = Callable[[_Member], IO[bytes]]


def bad_bundle(message: str, member: str | None = None) -> FsupError:
    details = {"member": member} if member is not None else {}
    return FsupError("INVALID_BUNDLE", message, details)


def extract_bundle(data: bytes, dest: Path, limits: BundleLimits = BundleLimits()) -> None:
    """Unpack `data` into the empty folder `dest`, or raise `FsupError(INVALID_BUNDLE)`.

    On error `dest` may hold a partial tree; the caller owns `dest` and removes it.
    """
    source: type[_TarSource] | type[_ZipSource]
    if data.startswith(GZIP_MAGIC):
        source = _TarSource
    elif data.startswith(ZIP_MAGIC):
        source = _ZipSource
    elif not data:
        raise bad_bundle("the request body is empty; send a .tar.gz or .zip bundle")
    else:
        raise bad_bundle("the bundle is neither a .tar.gz nor a .zip archive")
    with source(data, limits) as (members, read):
        _check_totals(members, len(data), limits)
        members = _strip_single_top_folder(members)
        for member in members:
            _write(dest, member, read)


class _TarSource:
    def __init__(self, data: bytes, limits: BundleLimits) -> None:
        try:
            self.archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")  # noqa: SIM115
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise bad_bundle(f"not a readable .tar.gz archive: {exc}") from None
        self.limits = limits

    def __enter__(self) -> tuple[list[_Member], _Reader]:
        members = []
        try:
            for info in self.archive:
                if len(members) >= self.limits.max_members:
                    raise bad_bundle(f"more than {self.limits.max_members} members")
                members.append(_tar_member(info))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise bad_bundle(f"corrupt .tar.gz archive: {exc}") from None
        return members, self.read

    def read(self, member: _Member) -> IO[bytes]:
        stream = self.archive.extractfile(member.handle)  # type: ignore[arg-type]
        if stream is None:
            raise bad_bundle("member has no data", str(member.name))
        return stream

    def __exit__(self, *exc_info: object) -> None:
        self.archive.close()


class _ZipSource:
    def __init__(self, data: bytes, limits: BundleLimits) -> None:
        try:
            self.archive = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise bad_bundle(f"not a readable .zip archive: {exc}") from None
        self.limits = limits

    def __enter__(self) -> tuple[list[_Member], _Reader]:
        infos = self.archive.infolist()
        if len(infos) > self.limits.max_members:
            raise bad_bundle(f"more than {self.limits.max_members} members")
        return [_zip_member(info) for info in infos], self.read

    def read(self, member: _Member) -> IO[bytes]:
        return self.archive.open(member.handle)  # type: ignore[arg-type]

    def __exit__(self, *exc_info: object) -> None:
        self.archive.close()


def _tar_member(info: tarfile.TarInfo) -> _Member:
    name = _safe_name(info.name)
    if info.issym() or info.islnk():
        raise bad_bundle("links are not allowed in a bundle", info.name)
    if not (info.isfile() or info.isdir()):
        raise bad_bundle("only regular files and folders are allowed in a bundle", info.name)
    return _Member(name, info.isdir(), info.size, bool(info.mode & 0o111), info)


def _zip_member(info: zipfile.ZipInfo) -> _Member:
    name = _safe_name(info.filename)
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)  # zero when the zip tool recorded permissions only
    if kind == stat.S_IFLNK:
        raise bad_bundle("links are not allowed in a bundle", info.filename)
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise bad_bundle("only regular files and folders are allowed in a bundle", info.filename)
    if info.flag_bits & 0x1:
        raise bad_bundle("encrypted members are not supported", info.filename)
    return _Member(name, info.is_dir(), info.file_size, bool(mode & 0o111), info)


def _safe_name(raw: str) -> PurePosixPath:
    """Refuse names that could land outside the destination, then normalise `a//./b`."""
    if not raw or "\0" in raw or "\\" in raw:
        raise bad_bundle("member name is empty or holds NUL or backslash characters", raw)
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise bad_bundle("absolute paths are not allowed in a bundle", raw)
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise bad_bundle("'..' is not allowed in member names", raw)
    if not parts:
        raise bad_bundle("member name resolves to the bundle root", raw)
    if len(raw) > 1024 or any(len(p) > 255 for p in parts):
        raise bad_bundle("member name is too long", raw[:200])
    return PurePosixPath(*parts)


def _check_totals(members: list[_Member], packed_bytes: int, limits: BundleLimits) -> None:
    names = set()
    for member in members:
        if member.name in names and not member.is_dir:
            raise bad_bundle("the bundle holds the same member twice", str(member.name))
        names.add(member.name)
    total = sum(m.size for m in members if not m.is_dir)
    if total > limits.max_unpacked_bytes:
        raise bad_bundle(
            f"unpacks to {total} bytes, more than the limit of {limits.max_unpacked_bytes}"
        )
    if total > limits.ratio_floor_bytes and total / max(packed_bytes, 1) > limits.max_ratio:
        raise bad_bundle(
            f"compression ratio {total / max(packed_bytes, 1):.0f}:1 exceeds "
            f"{limits.max_ratio:.0f}:1 (a decompression bomb?)"
        )


def _strip_single_top_folder(members: list[_Member]) -> list[_Member]:
    tops = {m.name.parts[0] for m in members}
    if len(tops) != 1 or not any(len(m.name.parts) > 1 for m in members):
        return members
    stripped = []
    for m in members:
        if len(m.name.parts) == 1:
            if not m.is_dir:
                return members  # a lone file named like the folder: nothing to strip
            continue
        stripped.append(
            _Member(PurePosixPath(*m.name.parts[1:]), m.is_dir, m.size, m.executable, m.handle)
        )
    return stripped


def _write(dest: Path, member: _Member, read: _Reader) -> None:
    target = dest.joinpath(*member.name.parts)
    if member.is_dir:
        target.mkdir(parents=True, exist_ok=True, mode=0o755)
        return
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    mode = 0o755 if member.executable else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, mode)
    except FileExistsError:
        raise bad_bundle("the bundle holds the same path twice", str(member.name)) from None
    except IsADirectoryError:
        raise bad_bundle("a file and a folder share this path", str(member.name)) from None
    with os.fdopen(fd, "wb") as out, read(member) as source:
        written = 0
        for chunk in _chunks(source):
            written += len(chunk)
            if written > member.size:
                raise bad_bundle("member holds more data than its header says", str(member.name))
            out.write(chunk)


def _chunks(source: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := source.read(COPY_CHUNK):
            yield chunk
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise bad_bundle(f"corrupt archive data: {exc}") from None

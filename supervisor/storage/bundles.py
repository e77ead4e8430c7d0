"""Safe unpacking of formation bundles (`.tar.gz` or `.zip`).

A bundle comes from the network, so nothing in it is trusted:

- Names: no absolute paths, no `..`, no drive letters, backslashes or control characters.
  Only regular files and folders (no links, devices, FIFOs or sparse files). Colliding
  members are refused: a file twice, a file and a folder on one path, a path through a file.
- Damage is refused, never skipped: zlib checks every gzip member's CRC-32 and length, each
  tar header's checksum is checked here (tarfile alone takes a bad header in the middle for
  the end of the archive and would deploy half a bundle), and every zip error is
  `INVALID_BUNDLE`.
- Work is bounded while streaming, never after: a member's declared size is checked against
  the unpacked-size and ratio limits before it is written, the bytes inflated are counted as
  they come out, and reading stops at the first limit passed. A `.tar.gz` is read in one
  forward pass (never inflated twice); a zip's central directory (entry count, overlapping
  entries, declared sizes) is checked before any member is inflated.

One top-level folder, if it holds everything, is stripped, so `tar czf app.tar.gz app/`
works as people expect. This module does blocking I/O; callers run it in a worker thread.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import cast

from supervisor.storage.bundle_checks import (
    BLOCK,
    COPY_CHUNK,
    GZIP_MAGIC,
    ZIP64_END,
    ZIP64_LOCATOR,
    ZIP_END,
    ZIP_END_SEARCH,
    ZIP_ENTRY,
    ZIP_ERRORS,
    ZIP_MAGIC,
    ZIP_METHODS,
    BundleLimits,
    bad_bundle,
    check_size,
    printable,
)
from supervisor.storage.gzip_stream import GzipStream

__all__ = ["BundleLimits", "extract_bundle", "safe_name"]

TAR_ERRORS = (tarfile.TarError, ValueError, OverflowError, UnicodeError, EOFError)


@dataclass(frozen=True)
class _Member:
    path: str  # normalised, "a/b/c"
    is_dir: bool
    size: int
    executable: bool


def extract_bundle(data: bytes, dest: Path, limits: BundleLimits = BundleLimits()) -> None:
    """Unpack `data` into the empty folder `dest`, or raise `FsupError(INVALID_BUNDLE)`.

    On error `dest` may hold a partial tree; the caller owns `dest` and removes it.
    """
    tree = _Tree(dest, limits, len(data))
    if data.startswith(GZIP_MAGIC):
        _extract_tar(data, tree)
    elif data.startswith(ZIP_MAGIC):
        _extract_zip(data, tree)
    elif not data:
        raise bad_bundle("the request body is empty; send a .tar.gz or .zip bundle")
    else:
        raise bad_bundle("the bundle is neither a .tar.gz nor a .zip archive")
    tree.strip_single_top_folder()


class _Tree:
    """The members admitted so far. Refuses collisions and counts paths (implicit folders
    too: each is a directory on disk) and declared bytes against the limits before a member
    is written, then writes it."""

    def __init__(self, dest: Path, limits: BundleLimits, packed_bytes: int) -> None:
        self.dest = dest
        self.limits = limits
        self.packed_bytes = packed_bytes
        self.kinds: dict[str, bool] = {}  # path -> is a folder
        self.declared = 0

    def admit(self, member: _Member) -> None:
        known = self.kinds.get(member.path)
        if known is not None:
            if known and member.is_dir:
                return  # a folder listed twice
            if not known and not member.is_dir:
                raise bad_bundle("the bundle holds the same member twice", member.path)
            raise bad_bundle("a file and a folder share this path", member.path)
        self._admit_parents(member.path)
        self._add(member.path, member.is_dir)
        if not member.is_dir:
            self.declared += member.size
            check_size(self.declared, self.packed_bytes, self.limits, member.path)

    def _admit_parents(self, path: str) -> None:
        """Walk up from the member's folder to the first folder already known, so a deep
        tree costs one step a member, not one a level."""
        new: list[str] = []
        parent = path
        while (cut := parent.rfind("/")) > 0:
            parent = parent[:cut]
            known = self.kinds.get(parent)
            if known:
                break
            if known is False:
                raise bad_bundle(
                    f"the member's path goes through the file {printable(parent)!r}", path
                )
            new.append(parent)
        for folder in reversed(new):
            self._add(folder, True)

    def _add(self, path: str, is_dir: bool) -> None:
        if len(self.kinds) >= self.limits.max_members:
            raise bad_bundle(f"more than {self.limits.max_members} members (folders included)")
        self.kinds[path] = is_dir

    def write(self, member: _Member, chunks: Iterable[bytes]) -> None:
        target = self.dest / member.path
        if member.is_dir:
            target.mkdir(parents=True, exist_ok=True, mode=0o755)
            return
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        mode = 0o755 if member.executable else 0o644
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        written = 0
        with os.fdopen(os.open(target, flags, mode), "wb") as out:
            for chunk in chunks:
                written += len(chunk)
                if written > member.size:
                    raise bad_bundle("member holds more data than its header says", member.path)
                out.write(chunk)
        if written != member.size:
            raise bad_bundle(
                "member holds less data than its header says (truncated?)", member.path
            )

    def strip_single_top_folder(self) -> None:
        """When everything sits in one top folder, move its content up (after the fact, as
        a tar stream is written before its last name is known)."""
        tops = [path for path in self.kinds if "/" not in path]
        if len(tops) != 1 or not self.kinds[tops[0]] or len(self.kinds) == 1:
            return
        holder = self.dest / f".fsup-strip-{uuid.uuid4().hex}"
        (self.dest / tops[0]).rename(holder)
        for child in holder.iterdir():
            child.rename(self.dest / child.name)
        holder.rmdir()


def safe_name(raw: str) -> str:
    """Refuse names that could land outside the destination, then normalise `a//./b`."""
    if not raw or "\0" in raw or "\\" in raw:
        raise bad_bundle("member name is empty or holds NUL or backslash characters", raw)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise bad_bundle("member name holds control characters", raw)
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_bundle("member name is not valid UTF-8", raw) from None
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise bad_bundle("absolute paths are not allowed in a bundle", raw)
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise bad_bundle("'..' is not allowed in member names", raw)
    if not parts:
        raise bad_bundle("member name resolves to the bundle root", raw)
    if len(raw) > 1024 or any(len(p) > 255 for p in parts):
        raise bad_bundle("member name is too long", raw)
    return str(PurePosixPath(*parts))


# --- .tar.gz -------------------------------------------------------------------------------


class _TarCursor:
    """What `tarfile.TarInfo.fromtarfile` needs of a `TarFile`. Reading headers through it,
    instead of `TarFile.next`, lets a damaged header raise instead of ending the archive."""

    def __init__(self, stream: GzipStream) -> None:
        self.fileobj = stream
        self.encoding = tarfile.ENCODING
        self.errors = "surrogateescape"
        self.offset = 0  # where the next header starts (fromtarfile sets it)
        self.pax_headers: dict[str, str] = {}


def _extract_tar(data: bytes, tree: _Tree) -> None:
    stream = GzipStream(data, tree.limits)
    cursor = _TarCursor(stream)
    while (info := _next_header(stream, cursor)) is not None:
        member = _tar_member(info)
        tree.admit(member)
        stream.member = member.path
        tree.write(member, () if member.is_dir else stream.chunks(member.size))
        stream.seek(cursor.offset)


def _next_header(stream: GzipStream, cursor: _TarCursor) -> tarfile.TarInfo | None:
    """The next member's header, or None at the end of the archive."""
    at = stream.position
    block = stream.peek(BLOCK)
    if not block:
        return None  # no end-of-archive blocks, but the gzip stream is complete and checked
    if block.count(0) == BLOCK:
        stream.expect_zeros()
        return None
    after = f"after member {stream.member!r}" if stream.member else "at the start"
    stream.reads = 0
    try:
        tarfile.TarInfo.frombuf(block, cursor.encoding, cursor.errors)
        return tarfile.TarInfo.fromtarfile(cast(tarfile.TarFile, cursor))
    except TAR_ERRORS as exc:
        name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace") or None
        raise bad_bundle(f"damaged tar header at byte {at} {after}: {exc}", name) from None


def _tar_member(info: tarfile.TarInfo) -> _Member:
    path = safe_name(info.name)
    if info.issym() or info.islnk():
        raise bad_bundle("links are not allowed in a bundle", info.name)
    if info.issparse():
        raise bad_bundle("sparse files are not supported in a bundle", info.name)
    if not (info.isfile() or info.isdir()):
        raise bad_bundle("only regular files and folders are allowed in a bundle", info.name)
    if info.size < 0:
        raise bad_bundle("member has a negative size", info.name)
    return _Member(path, info.isdir(), info.size, bool(info.mode & 0o111))


# --- .zip ----------------------------------------------------------------------------------


def _extract_zip(data: bytes, tree: _Tree) -> None:
    directory_start, entries = _zip_directory(data)
    if entries > tree.limits.max_members:
        raise bad_bundle(f"more than {tree.limits.max_members} members")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except ZIP_ERRORS as exc:
        raise bad_bundle(f"not a readable .zip archive: {exc}") from None
    with archive:
        infos = archive.infolist()
        members = [_zip_member(info) for info in infos]
        _check_zip_layout(data, infos, directory_start)
        for member in members:
            tree.admit(member)
        for member, info in zip(members, infos, strict=True):
            tree.write(member, _zip_chunks(archive, info))


def _zip_directory(data: bytes) -> tuple[int, int]:
    """Where the central directory starts, and a bound on its entries (the entry signatures
    in it), found before zipfile parses it: two million tiny entries would cost a GiB of
    `ZipInfo` objects."""
    end = data.rfind(ZIP_END, max(0, len(data) - ZIP_END_SEARCH))
    if end < 0 or len(data) - end < 22:
        raise bad_bundle("not a readable .zip archive: no end of central directory (truncated?)")
    size = struct.unpack_from("<I", data, end + 12)[0]
    if (
        end >= 76
        and data.startswith(ZIP64_LOCATOR, end - 20)
        and data.startswith(ZIP64_END, end - 76)
    ):
        end -= 76
        size = struct.unpack_from("<Q", data, end + 40)[0]
    start = max(0, end - size)
    return start, data.count(ZIP_ENTRY, start, end)


def _zip_member(info: zipfile.ZipInfo) -> _Member:
    path = safe_name(info.filename)
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)  # zero when the zip tool recorded permissions only
    if kind == stat.S_IFLNK:
        raise bad_bundle("links are not allowed in a bundle", info.filename)
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise bad_bundle("only regular files and folders are allowed in a bundle", info.filename)
    if info.flag_bits & 0x1:
        raise bad_bundle("encrypted members are not supported", info.filename)
    if info.compress_type not in ZIP_METHODS:
        raise bad_bundle(
            f"compression method {info.compress_type} is not supported (use deflate or store)",
            info.filename,
        )
    return _Member(path, info.is_dir(), info.file_size, bool(mode & 0o111))


def _check_zip_layout(data: bytes, infos: list[zipfile.ZipInfo], directory_start: int) -> None:
    """Each member's local header must be where the directory says, and members' data must
    not overlap each other or the directory: overlap is how a small zip bomb inflates one
    compressed stream many times."""
    end_of_previous = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        at = info.header_offset
        if at < end_of_previous:
            raise bad_bundle("member overlaps another one (a zip bomb?)", info.filename)
        if at < 0 or len(data) < at + 30 or not data.startswith(ZIP_MAGIC, at):
            raise bad_bundle("bad local file header", info.filename)
        name_length, extra_length = struct.unpack_from("<HH", data, at + 26)
        end_of_previous = at + 30 + name_length + extra_length + info.compress_size
        if end_of_previous > directory_start:
            raise bad_bundle("member data runs into the central directory", info.filename)


def _zip_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    try:
        with archive.open(info) as source:
            while chunk := source.read(COPY_CHUNK):
                yield chunk
    except ZIP_ERRORS as exc:
        raise bad_bundle(f"damaged member: {exc}", info.filename) from None

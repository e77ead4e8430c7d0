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
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import cast

from supervisor.core.errors import FsupError

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
COPY_CHUNK = 64 * 1024
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib parses the gzip header and checks the trailer
MAX_GZIP_MEMBERS = 16  # `cat a.gz b.gz` is valid gzip; a million empty members is an attack
BLOCK = tarfile.BLOCKSIZE
MAX_HEADER_READ = 1024 * 1024  # the data of one pax or GNU long-name header
MAX_HEADER_READS = 16  # header blocks and extended headers read for one member
MAX_TRAILING_ZEROS = 4 * 1024 * 1024  # padding after the end-of-archive blocks
ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
ZIP_END, ZIP64_END, ZIP64_LOCATOR = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"
ZIP_ENTRY = b"PK\x01\x02"
ZIP_END_SEARCH = 22 + 0xFFFF  # the end record and the longest comment
# Everything zipfile raises on a damaged archive (unknown method, bad version, bad UTF-8
# names, short reads, inflate errors...): all of them are the client's bundle at fault.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    OverflowError,
    struct.error,
    zlib.error,
)
TAR_ERRORS = (tarfile.TarError, ValueError, OverflowError, UnicodeError, EOFError)


@dataclass(frozen=True)
class BundleLimits:
    max_members: int = 10_000
    max_unpacked_bytes: int = 512 * 1024 * 1024
    max_ratio: float = 100.0
    # Below this unpacked size the ratio is not checked: a small text bundle compresses well
    # and cannot be a bomb.
    ratio_floor_bytes: int = 1024 * 1024

    @property
    def max_inflated_bytes(self) -> int:
        """What a `.tar.gz` may inflate to in all: the members' data, plus room for tar
        headers and padding (about 2 KiB a member) and the end-of-archive padding."""
        return self.max_unpacked_bytes + 2048 * self.max_members + 2 * MAX_TRAILING_ZEROS


@dataclass(frozen=True)
class _Member:
    path: str  # normalised, "a/b/c"
    is_dir: bool
    size: int
    executable: bool


def bad_bundle(message: str, member: str | None = None) -> FsupError:
    details = {"member": printable(member)} if member is not None else {}
    return FsupError("INVALID_BUNDLE", message, details)


def printable(text: str, limit: int = 200) -> str:
    """A member name as it may appear in an error: bounded, with control characters and
    undecodable bytes escaped (it ends up in JSON and on an operator's terminal)."""
    text = text[:limit]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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


def check_size(total: int, packed_bytes: int, limits: BundleLimits, member: str | None) -> None:
    """Refuse once the members' `total` declared bytes pass the size limit or the ratio."""
    if total > limits.max_unpacked_bytes:
        raise bad_bundle(
            f"unpacks to more than {limits.max_unpacked_bytes} bytes, the limit", member
        )
    check_ratio(total, packed_bytes, limits, member)


def check_ratio(total: int, packed_bytes: int, limits: BundleLimits, member: str | None) -> None:
    ratio = total / max(packed_bytes, 1)
    if total > limits.ratio_floor_bytes and ratio > limits.max_ratio:
        raise bad_bundle(
            f"compression ratio {ratio:.0f}:1 exceeds {limits.max_ratio:.0f}:1 "
            "(a decompression bomb?)",
            member,
        )


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


class _GzipStream:
    """The inflated bytes of a `.tar.gz`, read forward only. zlib checks each gzip member's
    CRC-32 and length; every byte that comes out is counted against the limits, so a bomb
    costs at most the budget. Also the file object `TarInfo.fromtarfile` reads headers from
    (`read`, `tell`, `seek`), with each read bounded."""

    def __init__(self, data: bytes, limits: BundleLimits) -> None:
        self.data = data
        self.limits = limits
        self.fed = 0  # bytes of `data` handed to zlib
        self.zlib = zlib.decompressobj(GZIP_WBITS)
        self.gzip_members = 1
        self.buffer = bytearray()  # inflated, not read yet
        self.ended = False
        self.position = 0  # in the tar stream, of the next byte read
        self.produced = 0
        self.member: str | None = None  # the member being read, for messages
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if not 0 <= size <= MAX_HEADER_READ or self.reads > MAX_HEADER_READS:
            raise bad_bundle(
                "a tar member's extended headers (pax, GNU long name) are too large or too many",
                self.member,
            )
        return self.take(size)

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < self.position:
            raise bad_bundle("a tar header points backwards into the archive", self.member)
        while self.position < offset and self.take(min(offset - self.position, COPY_CHUNK)):
            pass
        return self.position

    def take(self, size: int) -> bytes:
        self._fill(size)
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        self.position += len(out)
        return out

    def peek(self, size: int) -> bytes:
        self._fill(size)
        return bytes(self.buffer[:size])

    def chunks(self, size: int) -> Iterator[bytes]:
        left = size
        while left > 0:
            chunk = self.take(min(left, COPY_CHUNK))
            if not chunk:
                raise bad_bundle("the archive ends inside this member (truncated?)", self.member)
            left -= len(chunk)
            yield chunk

    def expect_zeros(self) -> None:
        """After the end-of-archive block only zero padding may follow: anything else is a
        header that tarfile would have skipped in silence. Reading to the end of the gzip
        stream also makes zlib check its CRC."""
        seen = 0
        while chunk := self.take(COPY_CHUNK):
            seen += len(chunk)
            if chunk.count(0) != len(chunk):
                raise bad_bundle(
                    "data after the end-of-archive marker (a damaged tar header?)", self.member
                )
            if seen > MAX_TRAILING_ZEROS:
                raise bad_bundle("more than 4 MiB of padding after the end of the archive")

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size and not self.ended:
            self.buffer += self._inflate(max(size - len(self.buffer), COPY_CHUNK))

    def _inflate(self, want: int) -> bytes:
        """Up to `want` more bytes; b"" once the gzip stream has ended cleanly."""
        while True:
            if self.zlib.eof:
                self._after_gzip_member()
                if self.ended:
                    return b""
            feed = self.zlib.unconsumed_tail
            if not feed:
                if self.fed >= len(self.data):
                    raise bad_bundle(
                        "not a readable .tar.gz: the gzip stream ends early (truncated?)",
                        self.member,
                    )
                feed = self.data[self.fed : self.fed + COPY_CHUNK]
                self.fed += len(feed)
            try:
                out = self.zlib.decompress(feed, want)
            except zlib.error as exc:
                raise bad_bundle(
                    f"not a readable .tar.gz: damaged gzip data ({exc})", self.member
                ) from None
            if out:
                self.produced += len(out)
                self._check_budget()
                return out

    def _after_gzip_member(self) -> None:
        """Another gzip member may follow, or zero padding; anything else is damage."""
        rest = self.fed - len(self.zlib.unused_data)
        if self.data.startswith(GZIP_MAGIC, rest):
            self.gzip_members += 1
            if self.gzip_members > MAX_GZIP_MEMBERS:
                raise bad_bundle(f"the .tar.gz has more than {MAX_GZIP_MEMBERS} gzip members")
            self.fed, self.zlib = rest, zlib.decompressobj(GZIP_WBITS)
        elif self.data.count(0, rest) == len(self.data) - rest:
            self.ended = True
        else:
            raise bad_bundle("data after the end of the gzip stream (a damaged file?)")

    def _check_budget(self) -> None:
        if self.produced > self.limits.max_inflated_bytes:
            raise bad_bundle(
                f"inflates to more than {self.limits.max_inflated_bytes} bytes, the limit",
                self.member,
            )
        check_ratio(self.produced, len(self.data), self.limits, self.member)


class _TarCursor:
    """What `tarfile.TarInfo.fromtarfile` needs of a `TarFile`. Reading headers through it,
    instead of `TarFile.next`, lets a damaged header raise instead of ending the archive."""

    def __init__(self, stream: _GzipStream) -> None:
        self.fileobj = stream
        self.encoding = tarfile.ENCODING
        self.errors = "surrogateescape"
        self.offset = 0  # where the next header starts (fromtarfile sets it)
        self.pax_headers: dict[str, str] = {}


def _extract_tar(data: bytes, tree: _Tree) -> None:
    stream = _GzipStream(data, tree.limits)
    cursor = _TarCursor(stream)
    while (info := _next_header(stream, cursor)) is not None:
        member = _tar_member(info)
        tree.admit(member)
        stream.member = member.path
        tree.write(member, () if member.is_dir else stream.chunks(member.size))
        stream.seek(cursor.offset)


def _next_header(stream: _GzipStream, cursor: _TarCursor) -> tarfile.TarInfo | None:
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

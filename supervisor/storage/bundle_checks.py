"""A bundle's limits and the checks every reader of an archive makes against them.

Shared by the archive readers (`bundles`) and the bounded gzip reader (`gzip_stream`).
"""

from __future__ import annotations

import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass

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

"""The inflated bytes of a `.tar.gz`, read forward once, every byte counted against the limits."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from supervisor.storage.bundle_checks import (
    COPY_CHUNK,
    GZIP_MAGIC,
    GZIP_WBITS,
    MAX_GZIP_MEMBERS,
    MAX_HEADER_READ,
    MAX_HEADER_READS,
    MAX_TRAILING_ZEROS,
    BundleLimits,
    bad_bundle,
    check_ratio,
)


class GzipStream:
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

"""Hostile bundles, without a server: damaged `.tar.gz` and `.zip` archives, decompression
bombs, colliding and oddly named members. Each must be a clear `INVALID_BUNDLE` that names
the member where there is one, never an exception of another kind, a hang or unbounded work.

The rest of the hostile corpus sits beside the parsers it attacks: formation.yaml in
test_manifest.py, JSON bodies and numbers in headers, cookies and queries in test_api_auth.py.
"""

from __future__ import annotations

import gzip
import tarfile
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from bundle_builders import (
    CRC_OF_A_GIB_OF_ZEROS,
    Entry,
    GiB,
    MiB,
    deflate_zeros,
    gzip_wrap,
    header,
    raw_zip,
    refused,
    tar_bytes,
    with_checksum,
)

from supervisor.core.errors import FsupError
from supervisor.storage.bundles import BundleLimits, extract_bundle


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    folder = tmp_path / "dest"
    folder.mkdir()
    return folder


# --- damaged .tar.gz -----------------------------------------------------------------------

GOOD_TAR = tar_bytes(
    ("app/formation.yaml", b"id: x\n"), ("app/b.txt", b"b" * 700), ("app/c.txt", b"c" * 10)
)
B_HEADER_AT = 1024  # after formation.yaml's header and its one block of data
CONTENT_END = 3584  # three headers and four blocks of data; then the end-of-archive blocks


def flipped(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0xFF
    return bytes(damaged)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (flipped(gzip.compress(GOOD_TAR), -8), "incorrect data check"),  # the CRC-32
        (flipped(gzip.compress(GOOD_TAR), -4), "incorrect length check"),  # ISIZE
        (gzip.compress(GOOD_TAR)[:-4], "ends early"),
        (gzip.compress(GOOD_TAR)[:60], "ends early"),
        (gzip.compress(GOOD_TAR) + b"garbage", "after the end of the gzip stream"),
        (gzip.compress(GOOD_TAR) + gzip.compress(b"")[:5], "ends early"),
        (flipped(gzip.compress(GOOD_TAR), 3), "unknown header flags"),
        (gzip.compress(GOOD_TAR[: 1536 + 300]), "ends inside this member"),
        (gzip.compress(GOOD_TAR[: 1024 + 100]), "damaged tar header"),
        (gzip.compress(GOOD_TAR + b"\x01" * 512), "after the end-of-archive marker"),
        (
            gzip.compress(
                GOOD_TAR[:CONTENT_END]
                + b"\0" * 512
                + with_checksum(header("late", 1))
                + b"\0" * 4096
            ),
            "after the end-of-archive marker",
        ),
    ],
    ids=[
        "crc",
        "isize",
        "no-trailer",
        "truncated",
        "trailing-garbage",
        "second-member-cut",
        "bad-flags",
        "data-cut",
        "header-cut",
        "after-end",
        "lone-zero-block",
    ],
)
def test_damaged_tar_gz_is_refused(dest: Path, data: bytes, words: str) -> None:
    assert words in refused(data, dest).message


def test_a_bad_header_in_the_middle_is_refused_naming_it(dest: Path) -> None:
    """tarfile takes a header with a bad checksum for the end of the archive: the bundle
    would deploy with its first member only."""
    damaged = bytearray(GOOD_TAR)
    damaged[B_HEADER_AT + 148] ^= 0x01  # b.txt's checksum field
    error = refused(gzip.compress(bytes(damaged)), dest)
    assert "damaged tar header" in error.message and "bad checksum" in error.message
    assert "after member 'app/formation.yaml'" in error.message
    assert error.details["member"] == "app/b.txt"


def test_a_garbled_header_field_is_refused(dest: Path) -> None:
    block = header("app/x", 10)
    block[124:136] = b"not-octal!!\0"  # size
    error = refused(gzip.compress(with_checksum(block) + b"x" * 512 + b"\0" * 1024), dest)
    assert "damaged tar header" in error.message and error.details["member"] == "app/x"


def test_concatenated_gzip_members_are_one_stream(dest: Path) -> None:
    extract_bundle(gzip.compress(GOOD_TAR[:1536]) + gzip.compress(GOOD_TAR[1536:]), dest)
    assert (dest / "b.txt").read_bytes() == b"b" * 700


def test_zero_padding_after_the_gzip_stream_is_fine(dest: Path) -> None:
    extract_bundle(gzip.compress(GOOD_TAR) + b"\0" * 1000, dest)
    assert (dest / "formation.yaml").exists()


def test_many_gzip_members_are_refused(dest: Path) -> None:
    data = gzip.compress(GOOD_TAR) + gzip.compress(b"") * 40
    assert "gzip members" in refused(data, dest).message


@pytest.mark.parametrize(
    ("block", "words"),
    [
        (header("big-pax", 2 * MiB, tarfile.XHDTYPE), "too large"),
        (header("././@LongLink", 3 * MiB, tarfile.GNUTYPE_LONGNAME), "too large"),
        (header("sparse", 0, tarfile.GNUTYPE_SPARSE), "sparse"),
        (header("fifo", 0, tarfile.FIFOTYPE), "only regular files"),
        (header("unknown-type", 0, b"Z"), "only regular files"),
    ],
)
def test_odd_tar_headers_are_refused(dest: Path, block: bytearray, words: str) -> None:
    data = gzip.compress(with_checksum(block) + b"a" * 4 * MiB)
    assert words in refused(data, dest).message


def test_a_negative_size_is_refused(dest: Path) -> None:
    block = header("neg", 0)
    block[124:136] = b"\xff" * 12  # base-256: -1
    error = refused(gzip.compress(with_checksum(block) + b"\0" * 1024), dest)
    assert "negative" in error.message and error.details["member"] == "neg"


def test_a_chain_of_pax_headers_is_bounded(dest: Path) -> None:
    pax = with_checksum(header("pax", 20, tarfile.XHDTYPE)) + b"20 comment=aaaaaaaa\n".ljust(
        512, b"\0"
    )
    error = refused(gzip.compress(pax * 2000 + b"\0" * 1024), dest)
    assert "too large" in error.message


# --- bombs ---------------------------------------------------------------------------------


class Inflating:
    """A zlib decompressor that adds what it inflates to a shared count."""

    def __init__(self, inner: Any, counted: list[int]) -> None:
        self.inner = inner
        self.counted = counted

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        out: bytes = self.inner.decompress(data, max_length)
        self.counted[0] += len(out)
        return out

    def flush(self, *args: int) -> bytes:
        out: bytes = self.inner.flush(*args)
        self.counted[0] += len(out)
        return out

    def __getattr__(self, name: str) -> Any:  # eof, unused_data, unconsumed_tail, ...
        return getattr(self.inner, name)


@pytest.fixture
def inflated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many bytes every zlib decompressor made (gzip_stream's and zipfile's) in the test:
    the work a bomb costs, counted rather than timed."""
    counted = [0]
    real = zlib.decompressobj

    def counting(*args: Any, **kwargs: Any) -> Inflating:
        return Inflating(real(*args, **kwargs), counted)

    monkeypatch.setattr(zlib, "decompressobj", counting)
    return counted


def bounded(run: object) -> int:
    """Peak bytes allocated by `run()`."""
    tracemalloc.start()
    try:
        run()  # type: ignore[operator]
    except FsupError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


@pytest.fixture(scope="module")
def tar_bomb() -> bytes:
    """A tar.gz holding one GiB of zeros in one member (about 1 MiB packed). The CRC is not
    computed: extraction must refuse long before the trailer."""
    head = with_checksum(header("zeros", GiB))
    return gzip_wrap(deflate_zeros(1024 + 1, head), 0, 512 + GiB + MiB)


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    return raw_zip(
        [Entry(b"zeros", deflate_zeros(1024), method=8, crc=CRC_OF_A_GIB_OF_ZEROS, size=GiB)]
    )


def test_a_gib_of_zeros_in_a_tar_gz_is_refused_quickly(
    dest: Path, tar_bomb: bytes, inflated: list[int]
) -> None:
    peak = bounded(lambda: refused(tar_bomb, dest))
    assert inflated[0] < 4 * MiB and peak < 4 * MiB, (inflated[0], peak)
    assert not any(dest.iterdir())


def test_a_gib_of_zeros_in_a_zip_is_refused_quickly(
    dest: Path, zip_bomb: bytes, inflated: list[int]
) -> None:
    peak = bounded(lambda: refused(zip_bomb, dest))
    assert inflated[0] < 4 * MiB and peak < 4 * MiB, (inflated[0], peak)
    assert not any(dest.iterdir())


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_a_ratio_bomb_under_the_size_limit_is_refused_before_inflating(
    dest: Path, fmt: str, inflated: list[int]
) -> None:
    """100 MiB of zeros: under the 512 MiB size limit, but 1000:1."""
    if fmt == "zip":
        data = raw_zip([Entry(b"zeros", deflate_zeros(100), method=8, size=100 * MiB)])
    else:
        data = gzip_wrap(deflate_zeros(101, with_checksum(header("zeros", 100 * MiB))), 0, 0)
    error = refused(data, dest)
    assert "ratio" in error.message and error.details["member"] == "zeros"
    assert inflated[0] < MiB, inflated[0]


def test_a_tar_header_that_lies_small_cannot_make_us_inflate_the_rest(
    dest: Path, inflated: list[int]
) -> None:
    """Ten bytes declared, a GiB of zeros after them: read as end-of-archive padding and
    refused after a few MiB, never inflated."""
    data = gzip_wrap(deflate_zeros(1024, with_checksum(header("small", 10))), 0, 0)
    peak = bounded(lambda: refused(data, dest))
    assert inflated[0] < 8 * MiB and peak < 8 * MiB, (inflated[0], peak)


def test_a_zip_header_that_lies_small_inflates_no_more_than_it_says(
    dest: Path, inflated: list[int]
) -> None:
    data = raw_zip(
        [Entry(b"small", deflate_zeros(1024), method=8, crc=zlib.crc32(bytes(10)), size=10)]
    )
    extract_bundle(data, dest)
    assert inflated[0] < MiB and (dest / "small").read_bytes() == bytes(10)


def test_the_declared_total_is_checked_member_by_member(dest: Path) -> None:
    many = tar_bytes(*[(f"f{i}", b"z" * 4000) for i in range(300)])
    error = refused(gzip.compress(many), dest, BundleLimits(max_unpacked_bytes=100_000))
    assert "limit" in error.message

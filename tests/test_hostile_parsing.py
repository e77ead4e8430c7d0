"""Hostile bundles, without a server: damaged `.tar.gz` and `.zip` archives, decompression
bombs, colliding and oddly named members. Each must be a clear `INVALID_BUNDLE` that names
the member where there is one, never an exception of another kind, a hang or unbounded work.

The rest of the hostile corpus sits beside the parsers it attacks: formation.yaml in
test_manifest.py, JSON bodies and numbers in headers, cookies and queries in test_api_auth.py.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import time
import tracemalloc
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from supervisor.core.errors import FsupError
from supervisor.storage.bundles import BundleLimits, extract_bundle

MiB = 1024 * 1024
GiB = 1024 * MiB
CRC_OF_A_GIB_OF_ZEROS = 0x5B64C2B0  # zlib.crc32 of 2**30 zero bytes, computed once


# --- builders ------------------------------------------------------------------------------


def tar_bytes(*members: tuple[str, bytes | None]) -> bytes:
    """An uncompressed tar; a member with data None is a folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytearray:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return bytearray(info.tobuf(tarfile.USTAR_FORMAT))


def with_checksum(block: bytearray) -> bytes:
    """Recompute a tar header's checksum after patching it."""
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def deflate_zeros(count_mib: int, head: bytes = b"") -> bytes:
    """A raw deflate stream of `head` and `count_mib` MiB of zeros, built in milliseconds:
    one MiB compressed once, ending in a full flush (no reference across it), repeated."""
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = first.compress(head) + first.flush(zlib.Z_FULL_FLUSH) if head else b""
    one = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = one.compress(bytes(MiB)) + one.flush(zlib.Z_FULL_FLUSH)
    return start + block * count_mib + b"\x03\x00"  # an empty final block


def gzip_wrap(deflated: bytes, crc: int, size: int) -> bytes:
    return (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        + deflated
        + struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)
    )


@dataclass
class Entry:
    """One zip member written by hand, so that every field can lie."""

    name: bytes
    payload: bytes = b"x"  # as stored: already compressed when method is 8
    method: int = 0
    crc: int | None = None  # default: crc32 of the payload
    size: int | None = None  # uncompressed size; default: len(payload)
    flags: int = 0
    version: int = 20
    mode: int = 0o100644


def raw_zip(entries: list[Entry], offsets: list[int] | None = None) -> bytes:
    """A zip written field by field; `offsets` overrides where the directory points."""
    out, directory = bytearray(), bytearray()
    for index, entry in enumerate(entries):
        crc = zlib.crc32(entry.payload) if entry.crc is None else entry.crc
        size = len(entry.payload) if entry.size is None else entry.size
        at = len(out) if offsets is None else offsets[index]
        common = struct.pack(
            "<HHHHHIII",
            entry.version,
            entry.flags,
            entry.method,
            0,
            0x21,
            crc,
            len(entry.payload),
            size,
        )
        out += b"PK\x03\x04" + common + struct.pack("<HH", len(entry.name), 0)
        out += entry.name + entry.payload
        directory += (
            b"PK\x01\x02"
            + struct.pack("<H", 0x031E)
            + common
            + struct.pack("<HHHHHII", len(entry.name), 0, 0, 0, 0, entry.mode << 16, at)
            + entry.name
        )
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), len(out), 0
    )
    return bytes(out + directory + end)


def std_zip(*members: tuple[str, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members:
                archive.writestr(name if data is not None else name.rstrip("/") + "/", data or b"")
    return buffer.getvalue()


def refused(data: bytes, dest: Path, limits: BundleLimits = BundleLimits()) -> FsupError:
    with pytest.raises(FsupError) as info:
        extract_bundle(data, dest, limits)
    assert info.value.code == "INVALID_BUNDLE" and info.value.status == 400
    return info.value


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


def bounded(run: object) -> tuple[float, int]:
    """Seconds and peak bytes allocated by `run()`."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        run()  # type: ignore[operator]
    except FsupError:
        pass
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak


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


def test_a_gib_of_zeros_in_a_tar_gz_is_refused_quickly(dest: Path, tar_bomb: bytes) -> None:
    elapsed, peak = bounded(lambda: refused(tar_bomb, dest))
    assert elapsed < 0.5 and peak < 4 * MiB, (elapsed, peak)
    assert not any(dest.iterdir())


def test_a_gib_of_zeros_in_a_zip_is_refused_quickly(dest: Path, zip_bomb: bytes) -> None:
    elapsed, peak = bounded(lambda: refused(zip_bomb, dest))
    assert elapsed < 0.5 and peak < 4 * MiB, (elapsed, peak)
    assert not any(dest.iterdir())


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_a_ratio_bomb_under_the_size_limit_is_refused_before_inflating(
    dest: Path, fmt: str
) -> None:
    """100 MiB of zeros: under the 512 MiB size limit, but 1000:1."""
    if fmt == "zip":
        data = raw_zip([Entry(b"zeros", deflate_zeros(100), method=8, size=100 * MiB)])
    else:
        data = gzip_wrap(deflate_zeros(101, with_checksum(header("zeros", 100 * MiB))), 0, 0)
    started = time.perf_counter()
    error = refused(data, dest)
    assert "ratio" in error.message and error.details["member"] == "zeros"
    assert time.perf_counter() - started < 0.2


def test_a_tar_header_that_lies_small_cannot_make_us_inflate_the_rest(dest: Path) -> None:
    """Ten bytes declared, a GiB of zeros after them: read as end-of-archive padding and
    refused after a few MiB, never inflated."""
    data = gzip_wrap(deflate_zeros(1024, with_checksum(header("small", 10))), 0, 0)
    elapsed, peak = bounded(lambda: refused(data, dest))
    assert elapsed < 0.5 and peak < 8 * MiB, (elapsed, peak)


def test_a_zip_header_that_lies_small_inflates_no_more_than_it_says(dest: Path) -> None:
    data = raw_zip(
        [Entry(b"small", deflate_zeros(1024), method=8, crc=zlib.crc32(bytes(10)), size=10)]
    )
    elapsed, _ = bounded(lambda: extract_bundle(data, dest))
    assert elapsed < 0.5 and (dest / "small").read_bytes() == bytes(10)


def test_the_declared_total_is_checked_member_by_member(dest: Path) -> None:
    many = tar_bytes(*[(f"f{i}", b"z" * 4000) for i in range(300)])
    error = refused(gzip.compress(many), dest, BundleLimits(max_unpacked_bytes=100_000))
    assert "limit" in error.message


# --- damaged and hostile zips --------------------------------------------------------------

GOOD_ENTRY = Entry(b"formation.yaml", b"id: x\n")


def corrupt(data: bytes, old: bytes, new: bytes, nth: int = 0) -> bytes:
    at = -1
    for _ in range(nth + 1):
        at = data.index(old, at + 1)
    return data[:at] + new + data[at + len(new) :]


@pytest.mark.parametrize(
    ("data", "words", "member"),
    [
        (raw_zip([GOOD_ENTRY, Entry(b"aes.bin", method=99)]), "method 99", "aes.bin"),
        (raw_zip([GOOD_ENTRY, Entry(b"bz.bin", method=12)]), "method 12", "bz.bin"),
        (raw_zip([Entry(b"secret", flags=0x1)]), "encrypted", "secret"),
        (raw_zip([Entry(b"bad-crc", b"hello", crc=1234)]), "CRC", "bad-crc"),
        (raw_zip([Entry(b"short", b"hello", size=50)]), "less data", "short"),
        (
            raw_zip([Entry(b"inflate", b"\xff\xff\xff\xff", method=8, size=10)]),
            "damaged",
            "inflate",
        ),
        (
            corrupt(raw_zip([GOOD_ENTRY, Entry(b"b")]), b"PK\x03\x04", b"PK\x03\x05", 1),
            "local file header",
            "b",
        ),
        (corrupt(raw_zip([Entry(b"name-a")]), b"name-a", b"name-b"), "differ", "name-a"),
        (
            raw_zip([Entry(b"a", b"1" * 100), Entry(b"b", b"2" * 100)], offsets=[0, 0]),
            "overlaps",
            None,
        ),
        (
            raw_zip([Entry(b"a", b"1" * 100), Entry(b"b", b"2" * 100)], offsets=[0, 50]),
            "overlaps",
            "b",
        ),
        (raw_zip([Entry(b"late", b"1" * 100)], offsets=[90]), "local file header", "late"),
        (raw_zip([Entry(b"ver", version=99)]), "zip file version", None),
    ],
    ids=[
        "method-99",
        "method-bzip2",
        "encrypted",
        "crc",
        "short",
        "bad-deflate",
        "local-sig",
        "name-mismatch",
        "full-overlap",
        "partial-overlap",
        "offset-past",
        "version",
    ],
)
def test_damaged_zips_are_refused_naming_the_member(
    dest: Path, data: bytes, words: str, member: str | None
) -> None:
    error = refused(data, dest)
    assert words in error.message
    if member is not None:
        assert error.details["member"] == member


@pytest.mark.parametrize(
    "data",
    [
        raw_zip([GOOD_ENTRY])[:40],
        corrupt(raw_zip([GOOD_ENTRY]), b"PK\x01\x02", b"PK\x01\x09"),
        raw_zip([GOOD_ENTRY])[:-22]
        + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, 10, 0, 0),
        raw_zip([Entry("é".encode("latin-1"), flags=0x800)]),
        raw_zip([GOOD_ENTRY])[:-22]
        + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, 10**6, 0, 0),
    ],
    ids=["truncated", "directory-signature", "directory-cut", "bad-utf8-name", "directory-size"],
)
def test_broken_zip_structures_are_refused(dest: Path, data: bytes) -> None:
    refused(data, dest)


def test_zip_entry_count_is_checked_before_parsing(dest: Path) -> None:
    data = std_zip(*[(f"f{i}", b"x") for i in range(50)])
    assert "more than 10 members" in refused(data, dest, BundleLimits(max_members=10)).message


def test_huge_declared_zip_size_is_refused_before_reading(dest: Path) -> None:
    data = raw_zip([Entry(b"huge", b"x", size=2**32 - 1)])
    error = refused(data, dest)
    assert "limit" in error.message and error.details["member"] == "huge"


# --- colliding members ---------------------------------------------------------------------

COLLISIONS = [
    ([("x", b"1"), ("x/y", b"2")], "goes through the file 'x'", "x/y"),
    ([("x", b"1"), ("x/y/z", b"2")], "goes through the file 'x'", "x/y/z"),
    ([("a/x", b"1"), ("a/x/y", b"2")], "goes through the file 'a/x'", "a/x/y"),
    ([("x/y", b"2"), ("x", b"1")], "a file and a folder share", "x"),
    ([("x", None), ("x", b"1")], "a file and a folder share", "x"),
    ([("x", b"1"), ("x", None)], "a file and a folder share", "x"),
    ([("a", b"1"), ("a", b"2")], "same member twice", "a"),
    ([("a/b", b"1"), ("./a//b", b"2")], "same member twice", "a/b"),
]


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
@pytest.mark.parametrize(("members", "words", "member"), COLLISIONS)
def test_colliding_members_are_refused(
    dest: Path, fmt: str, members: list[tuple[str, bytes | None]], words: str, member: str
) -> None:
    data = gzip.compress(tar_bytes(*members)) if fmt == "tar.gz" else std_zip(*members)
    error = refused(data, dest)
    assert words in error.message and error.details["member"] == member


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_a_folder_listed_twice_is_fine(dest: Path, fmt: str) -> None:
    members = [("app", None), ("app/a", b"1"), ("app", None), ("app/b", b"2")]
    data = gzip.compress(tar_bytes(*members)) if fmt == "tar.gz" else std_zip(*members)
    extract_bundle(data, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["a", "b"]


def test_a_top_folder_holding_its_namesake_is_stripped(dest: Path) -> None:
    extract_bundle(gzip.compress(tar_bytes(("app/app/x", b"1"), ("app/y", b"2"))), dest)
    assert (dest / "app" / "x").read_bytes() == b"1" and (dest / "y").exists()


def test_implicit_folders_count_as_members(dest: Path) -> None:
    deep = "/".join(f"d{i}" for i in range(40)) + "/f"
    error = refused(gzip.compress(tar_bytes((deep, b"1"))), dest, BundleLimits(max_members=20))
    assert "more than 20 members" in error.message


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("a\nb", "control"),
        ("a\x1b[31m", "control"),
        ("a\x7f", "control"),
        ("x" * 300, "too long"),
        ("a/" + "b" * 256, "too long"),
        ("./", "root"),
    ],
)
def test_odd_member_names_are_refused(dest: Path, name: str, words: str) -> None:
    error = refused(gzip.compress(tar_bytes((name, b"1"))), dest)
    assert words in error.message and error.details["member"].isprintable()


def test_a_name_that_is_not_utf8_is_refused_printably(dest: Path) -> None:
    block = header("x", 1)
    block[0:4] = b"\xff\xfeab"
    error = refused(
        gzip.compress(with_checksum(block) + b"1".ljust(512, b"\0") + b"\0" * 1024), dest
    )
    assert "UTF-8" in error.message and error.details["member"].isprintable()

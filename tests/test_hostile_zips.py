"""Hostile zips and colliding or oddly named members, without a server: each a clear
`INVALID_BUNDLE` naming the member where there is one (the `.tar.gz` cases and bombs are in
test_hostile_parsing.py)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
from bundle_builders import (
    Entry,
    header,
    raw_zip,
    refused,
    std_zip,
    tar_bytes,
    with_checksum,
)

from supervisor.storage.bundles import BundleLimits, extract_bundle


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    folder = tmp_path / "dest"
    folder.mkdir()
    return folder


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

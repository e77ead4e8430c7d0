"""Builders of hostile bundles for the parser tests (test_hostile_parsing, test_hostile_zips)."""

from __future__ import annotations

import io
import struct
import tarfile
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

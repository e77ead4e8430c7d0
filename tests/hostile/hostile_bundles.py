"""Hostile bundles, built byte by byte: damaged gzip and tar, damaged zips, bombs, and the
means (`targz_with`, `zip_with`, `tar_file`, `tar_special`, `zip_info`, `raw_zip`) to add
colliding and escaping members, links and devices to a valid bundle. Which bundles the corpus
sends, and what fsup must answer, is the table in `hostile_archive_cases.py`.

Every builder takes the formation id and version to put in `formation.yaml` and returns the
body to upload: where the damage spares the manifest, a server that misses the damage would
really deploy (or update to) that formation, and the snapshot after the case would show it.
"""

from __future__ import annotations

import functools
import gzip
import io
import struct
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from helpers import NASTY, manifest

Builder = Callable[[str, str], bytes]
TOP = "app"
MiB = 1024 * 1024


def _files(formation_id: str, version: str) -> dict[str, bytes]:
    """The files of a valid, runnable bundle (before any damage)."""
    return {
        "formation.yaml": manifest(formation_id, version=version).encode(),
        "nasty.py": NASTY.read_bytes(),
    }


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, 6, mtime=0)


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def tar_file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def tar_special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, b""


def _valid_entries(formation_id: str, version: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    return [tar_file(f"{TOP}/{name}", data) for name, data in _files(formation_id, version).items()]


def valid_targz(formation_id: str, version: str) -> bytes:
    return gzipped(_tar(_valid_entries(formation_id, version)))


def valid_zip(formation_id: str, version: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in _files(formation_id, version).items():
            archive.writestr(f"{TOP}/{name}", data)
    return buffer.getvalue()


def targz_with(*extra: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.GNU_FORMAT) -> Builder:
    """A valid bundle followed by `extra` members."""
    return lambda fid, ver: gzipped(_tar([*_valid_entries(fid, ver), *extra], fmt))


def zip_info(name: str, mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    if mode is not None:
        info.external_attr = mode << 16
        info.create_system = 3
    return info


def zip_with(*extra: tuple[zipfile.ZipInfo | str, bytes]) -> Builder:
    """A valid bundle followed by `extra` members (duplicates allowed)."""

    def build(fid: str, ver: str) -> bytes:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about duplicate names
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for name, data in _files(fid, ver).items():
                    archive.writestr(f"{TOP}/{name}", data)
                for info, data in extra:
                    archive.writestr(info, data)
        return buffer.getvalue()

    return build


# ---- gzip damage -----------------------------------------------------------------------------


def gzip_bad_crc(fid: str, ver: str) -> bytes:
    data = bytearray(valid_targz(fid, ver))
    data[-8:-4] = bytes(b ^ 0xFF for b in data[-8:-4])
    return bytes(data)


def gzip_bad_isize(fid: str, ver: str) -> bytes:
    data = bytearray(valid_targz(fid, ver))
    data[-4:] = struct.pack("<I", (struct.unpack("<I", data[-4:])[0] + 512) & 0xFFFFFFFF)
    return bytes(data)


def gzip_no_trailer(fid: str, ver: str) -> bytes:
    return valid_targz(fid, ver)[:-8]


def gzip_truncated_half(fid: str, ver: str) -> bytes:
    data = valid_targz(fid, ver)
    return data[: len(data) // 2]


def gzip_corrupt_deflate(fid: str, ver: str) -> bytes:
    """Bytes flipped in the middle of the deflate stream."""
    data = bytearray(valid_targz(fid, ver))
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0x5A for b in data[middle : middle + 16])
    return bytes(data)


# ---- tar damage ------------------------------------------------------------------------------


def _tar_checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header[:512])


def damaged_third_header(damage: Callable[[bytearray], None]) -> Builder:
    """formation.yaml, nasty.py, then README.txt whose header is damaged: a tar reader that
    stops silently at a bad header would deploy the first two."""

    def build(fid: str, ver: str) -> bytes:
        entries = _valid_entries(fid, ver)
        raw = bytearray(_tar([*entries, tar_file(f"{TOP}/README.txt", b"read me\n" * 100)]))
        offset = raw.find(f"{TOP}/README.txt".encode())
        header = raw[offset : offset + 512]
        damage(header)
        raw[offset : offset + 512] = header
        return gzipped(bytes(raw))

    return build


def bad_checksum(header: bytearray) -> None:
    header[148:156] = b"0000001\0"


def bad_size_field(header: bytearray) -> None:
    header[124:136] = b"zz9zz9zz9zz\0"
    _tar_checksum(header)


def bad_type_and_magic(header: bytearray) -> None:
    header[0:100] = b"\xff" * 100
    header[257:263] = b"XXXXXX"


def tar_truncated_member(fid: str, ver: str) -> bytes:
    raw = _tar([*_valid_entries(fid, ver), tar_file(f"{TOP}/big.txt", b"x" * 20000)])
    cut = raw.find(f"{TOP}/big.txt".encode()) + 512 + 5000
    return gzipped(raw[:cut])


def tar_plain(fid: str, ver: str) -> bytes:
    return _tar(_valid_entries(fid, ver))


def tar_bz2(fid: str, ver: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as archive:
        for info, data in _valid_entries(fid, ver):
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_long_name(fid: str, ver: str) -> bytes:
    return targz_with(tar_file(f"{TOP}/" + "n" * 2000, b"x"), fmt=tarfile.PAX_FORMAT)(fid, ver)


def tar_nul_in_name(fid: str, ver: str) -> bytes:
    info, data = tar_file(f"{TOP}/ok.txt", b"x")
    info.pax_headers = {"path": f"{TOP}/evil\0.txt"}
    return targz_with((info, data), fmt=tarfile.PAX_FORMAT)(fid, ver)


def tar_sparse_bomb(fid: str, ver: str) -> bytes:
    """A GNU sparse member: 512 bytes in the archive, 64 GiB once expanded."""
    info = tarfile.TarInfo(f"{TOP}/sparse.bin")
    info.type, info.size, info.mode = tarfile.GNUTYPE_SPARSE, 512, 0o644
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[386:398] = tarfile.itn(0, 12, tarfile.GNU_FORMAT)
    header[398:410] = tarfile.itn(512, 12, tarfile.GNU_FORMAT)
    header[482] = 0
    header[483:495] = tarfile.itn(64 * 1024 * MiB, 12, tarfile.GNU_FORMAT)
    _tar_checksum(header)
    body = _tar(_valid_entries(fid, ver))
    end = -(-len(body.rstrip(b"\0")) // 512) * 512  # without the end-of-archive blocks
    raw = body[:end] + bytes(header) + b"s" * 512 + b"\0" * 1024
    return gzipped(raw)


# ---- zip damage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ZipEntry:
    local: int  # offset of the local header
    central: int  # offset of the central directory entry


def _zip_entries(data: bytes) -> dict[str, _ZipEntry]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    found, position = {}, data.rfind(b"PK\x05\x06")
    cd_offset = struct.unpack("<I", data[position + 16 : position + 20])[0]
    for info in infos:
        assert data[cd_offset : cd_offset + 4] == b"PK\x01\x02"
        name_len, extra_len, comment_len = struct.unpack(
            "<HHH", data[cd_offset + 28 : cd_offset + 34]
        )
        found[info.filename] = _ZipEntry(info.header_offset, cd_offset)
        cd_offset += 46 + name_len + extra_len + comment_len
    return found


def patched_zip(
    patch: Callable[[bytearray, _ZipEntry], None], member: str = "README.txt"
) -> Builder:
    """A valid zip plus README.txt, then `patch` applied to README's headers."""

    def build(fid: str, ver: str) -> bytes:
        data = bytearray(zip_with((zip_info(f"{TOP}/{member}"), b"read me\n" * 200))(fid, ver))
        patch(data, _zip_entries(bytes(data))[f"{TOP}/{member}"])
        return bytes(data)

    return build


def zip_method(method: int) -> Callable[[bytearray, _ZipEntry], None]:
    def patch(data: bytearray, entry: _ZipEntry) -> None:
        data[entry.local + 8 : entry.local + 10] = struct.pack("<H", method)
        data[entry.central + 10 : entry.central + 12] = struct.pack("<H", method)

    return patch


def zip_bad_local_signature(data: bytearray, entry: _ZipEntry) -> None:
    data[entry.local : entry.local + 4] = b"PK\x07\x07"


def zip_encrypted(data: bytearray, entry: _ZipEntry) -> None:
    for offset in (entry.local + 6, entry.central + 8):
        flags = struct.unpack("<H", data[offset : offset + 2])[0] | 0x1
        data[offset : offset + 2] = struct.pack("<H", flags)


def zip_bad_crc(data: bytearray, entry: _ZipEntry) -> None:
    for offset in (entry.local + 14, entry.central + 16):
        data[offset : offset + 4] = bytes(b ^ 0xFF for b in data[offset : offset + 4])


def zip_bad_central(data: bytearray, entry: _ZipEntry) -> None:
    data[entry.central : entry.central + 4] = b"PK\x09\x09"


def zip_local_name_mismatch(data: bytearray, entry: _ZipEntry) -> None:
    """The local header names another file than the central directory."""
    name_at = entry.local + 30
    data[name_at : name_at + 3] = b"../"


def zip_truncated(fid: str, ver: str) -> bytes:
    data = valid_zip(fid, ver)
    return data[: len(data) * 2 // 3]


def zip_empty(fid: str, ver: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w"):
        pass
    return buffer.getvalue()


def raw_zip(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip from (name, method, compressed data, crc, declared size) by hand."""
    out, central = bytearray(), bytearray()
    for name, method, data, crc, size in entries:
        encoded = name.encode()
        offset = len(out)
        out += (
            struct.pack(
                "<4sHHHHHIIIHH",
                b"PK\x03\x04",
                20,
                0,
                method,
                0,
                0x21,
                crc,
                len(data),
                size,
                len(encoded),
                0,
            )
            + encoded
            + data
        )
        central += (
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                0,
                method,
                0,
                0x21,
                crc,
                len(data),
                size,
                len(encoded),
                0,
                0,
                0,
                0,
                0o644 << 16,
                offset,
            )
            + encoded
        )
    eocd = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0
    )
    return bytes(out + central + eocd)


@functools.cache
def _deflated_zeros(segments: int) -> tuple[bytes, int]:
    """Raw deflate of `segments` x 64 MiB of zeros, built from one flushed segment, and the
    CRC-32 of the whole."""
    block = bytes(64 * MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(segments):
        crc = zlib.crc32(block, crc)
    return segment * segments + final, crc


def zip_bomb_declared(fid: str, ver: str) -> bytes:
    """One member of 640 MiB of zeros (over the 512 MiB limit), 640 KiB packed."""
    data, crc = _deflated_zeros(10)
    return raw_zip([(f"{TOP}/bomb.bin", 8, data, crc, 10 * 64 * MiB)])


def zip_bomb_ratio(fid: str, ver: str) -> bytes:
    """64 MiB of zeros in 64 KiB: a ratio of about 1000:1, under the size limit."""
    data, crc = _deflated_zeros(1)
    return raw_zip([(f"{TOP}/bomb.bin", 8, data, crc, 64 * MiB)])


def zip_bomb_size_lie(fid: str, ver: str) -> bytes:
    """Declares 4 KiB, inflates to 640 MiB."""
    data, crc = _deflated_zeros(10)
    return raw_zip([(f"{TOP}/bomb.bin", 8, data, crc, 4096)])


def zip_too_many(fid: str, ver: str) -> bytes:
    return _many_zip(10_001)


@functools.cache
def _many_zip(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(count):
            archive.writestr(zip_info(f"{TOP}/f{index}"), b"")
    return buffer.getvalue()


# ---- tar.gz bombs ------------------------------------------------------------------------------


@functools.cache
def _deflate_segment(data: bytes) -> bytes:
    """Raw deflate of `data`, ended by a full flush: byte-aligned and independent of what
    comes before or after, so segments can be concatenated into one stream."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


def _gz_bomb(members: tuple[tuple[str, int], ...]) -> bytes:
    """A .tar.gz (one gzip member) of members made of zeros, from cached deflate segments, so
    that gigabytes cost one 64 MiB compression to build. The CRC in the trailer is only right
    for small bombs: a server that keeps to its limits never reaches it."""
    zeros = bytes(64 * MiB)
    segments, crc, total = [], 0, 0
    for name, size in members:
        assert size % (64 * MiB) == 0
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, 0o644
        header = info.tobuf(tarfile.GNU_FORMAT)
        segments.append(_deflate_segment(header))
        segments += [_deflate_segment(zeros)] * (size // (64 * MiB))
        total += len(header) + size
        if total <= 256 * MiB:
            crc = zlib.crc32(header, crc)
            for _ in range(size // (64 * MiB)):
                crc = zlib.crc32(zeros, crc)
    end = bytes(1024)
    crc, total = zlib.crc32(end, crc), total + len(end)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    segments.append(tail.compress(end) + tail.flush(zlib.Z_FINISH))
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"
    return head + b"".join(segments) + struct.pack("<II", crc, total & 0xFFFFFFFF)


@functools.cache
def targz_bomb_one_member(fid: str, ver: str) -> bytes:
    """A 6 GiB member of zeros in 6 MiB: the header alone says it is over every limit."""
    return _gz_bomb(((f"{TOP}/bomb.bin", 6144 * MiB),))


@functools.cache
def targz_bomb_many_members(fid: str, ver: str) -> bytes:
    """96 members of 64 MiB (6 GiB in 6 MiB): each under the limits, together far over."""
    return _gz_bomb(tuple((f"{TOP}/bomb{i}.bin", 64 * MiB) for i in range(96)))


def targz_bomb_ratio(fid: str, ver: str) -> bytes:
    """128 MiB of zeros in 128 KiB (ratio about 1000:1), under the size limit."""
    return _gz_bomb(((f"{TOP}/bomb.bin", 128 * MiB),))


def targz_too_many(fid: str, ver: str) -> bytes:
    return _many_targz(10_001)


@functools.cache
def _many_targz(count: int) -> bytes:
    return gzipped(_tar([tar_file(f"{TOP}/f{i}", b"") for i in range(count)]))

"""The hostile archive cases: every hostile bundle of `test_hostile_archives.py`, with what
fsup must answer to it (statuses, codes, a time bound) and whether it is also sent as an
update. The bytes are built in `hostile_bundles.py`; this table is the corpus's verdict on
them, kept apart so that adding a case is one line here, not a search through the builders.
"""

from __future__ import annotations

import stat
import tarfile
from dataclasses import dataclass

from hostile_bundles import (
    TOP,
    Builder,
    bad_checksum,
    bad_size_field,
    bad_type_and_magic,
    damaged_third_header,
    gzip_bad_crc,
    gzip_bad_isize,
    gzip_corrupt_deflate,
    gzip_no_trailer,
    gzip_truncated_half,
    gzipped,
    patched_zip,
    raw_zip,
    tar_bz2,
    tar_file,
    tar_long_name,
    tar_nul_in_name,
    tar_plain,
    tar_sparse_bomb,
    tar_special,
    tar_truncated_member,
    targz_bomb_many_members,
    targz_bomb_one_member,
    targz_bomb_ratio,
    targz_too_many,
    targz_with,
    valid_targz,
    zip_bad_central,
    zip_bad_crc,
    zip_bad_local_signature,
    zip_bomb_declared,
    zip_bomb_ratio,
    zip_bomb_size_lie,
    zip_empty,
    zip_encrypted,
    zip_info,
    zip_local_name_mismatch,
    zip_method,
    zip_too_many,
    zip_truncated,
    zip_with,
)
from hostile_kit import PLANT

ESCAPES = "../" * 24
# From a staging folder (home/server/staging/<uuid>/) four levels up is the module's tmp root,
# where the canary folder lies.
TO_CANARY = "../../../../canary/"


@dataclass(frozen=True)
class ArchiveCase:
    id: str
    build: Builder
    content_type: str = "application/gzip"
    statuses: tuple[int, ...] = (400,)
    codes: tuple[str, ...] = ("INVALID_BUNDLE",)
    update: bool = True  # also sent as PUT /rpc/formations/{id}
    bound_s: float | None = None


# Limits are enforced while streaming, so a refusal may cost up to the unpacked-size limit
# (512 MiB) of inflation, or writing up to the member limit: a wider bound than other cases.
LIMIT_BOUND_S = 15.0
LIMITS = dict(
    statuses=(400, 413), codes=("INVALID_BUNDLE", "PAYLOAD_TOO_LARGE"), bound_s=LIMIT_BOUND_S
)
ZIP = "application/zip"

ARCHIVE_CASES: list[ArchiveCase] = [
    # damaged gzip
    ArchiveCase("gzip-bad-crc", gzip_bad_crc),
    ArchiveCase("gzip-bad-isize", gzip_bad_isize),
    ArchiveCase("gzip-no-trailer", gzip_no_trailer),
    ArchiveCase("gzip-truncated-half", gzip_truncated_half),
    ArchiveCase("gzip-corrupt-deflate", gzip_corrupt_deflate),
    # damaged tar inside a good gzip
    ArchiveCase("tar-bad-checksum-mid-archive", damaged_third_header(bad_checksum)),
    ArchiveCase("tar-bad-size-field-mid-archive", damaged_third_header(bad_size_field)),
    ArchiveCase("tar-garbage-header-mid-archive", damaged_third_header(bad_type_and_magic)),
    ArchiveCase("tar-truncated-member-data", tar_truncated_member),
    ArchiveCase("tar-long-member-name", tar_long_name),
    ArchiveCase("tar-nul-in-member-name", tar_nul_in_name),
    # damaged zips
    ArchiveCase("zip-bad-local-header", patched_zip(zip_bad_local_signature), ZIP),
    ArchiveCase("zip-unknown-compression-99", patched_zip(zip_method(99)), ZIP),
    ArchiveCase("zip-implode-compression-6", patched_zip(zip_method(6)), ZIP),
    ArchiveCase("zip-encrypted-member", patched_zip(zip_encrypted), ZIP),
    ArchiveCase("zip-bad-crc", patched_zip(zip_bad_crc), ZIP),
    ArchiveCase("zip-bad-central-directory", patched_zip(zip_bad_central), ZIP),
    ArchiveCase("zip-local-name-differs", patched_zip(zip_local_name_mismatch), ZIP),
    ArchiveCase("zip-truncated", zip_truncated, ZIP),
    # members that collide
    ArchiveCase(
        "tar-file-then-dir-member",
        targz_with(tar_file(f"{TOP}/x", b"1"), tar_file(f"{TOP}/x/y", b"2")),
    ),
    ArchiveCase(
        "zip-file-then-dir-member", zip_with((f"{TOP}/x", b"1"), (f"{TOP}/x/y", b"2")), ZIP
    ),
    ArchiveCase(
        "tar-dir-then-file-member",
        targz_with(tar_file(f"{TOP}/x/y", b"2"), tar_file(f"{TOP}/x", b"1")),
    ),
    ArchiveCase("tar-same-member-twice", targz_with(tar_file(f"{TOP}/nasty.py", b"print('evil')"))),
    ArchiveCase("zip-same-member-twice", zip_with((f"{TOP}/nasty.py", b"print('evil')")), ZIP),
    ArchiveCase(
        "zip-manifest-is-a-folder",
        lambda f, v: raw_zip(
            [(f"{TOP}/formation.yaml/", 0, b"", 0, 0), (f"{TOP}/formation.yaml/x", 0, b"", 0, 0)]
        ),
        ZIP,
    ),
    # escaping the destination
    ArchiveCase("tar-dotdot", targz_with(tar_file(f"../{PLANT}", b"x"))),
    ArchiveCase("tar-dotdot-to-canary", targz_with(tar_file(f"{TOP}/{TO_CANARY}{PLANT}", b"x"))),
    ArchiveCase("tar-dotdot-to-tmp", targz_with(tar_file(f"{ESCAPES}tmp/{PLANT}", b"x"))),
    ArchiveCase("tar-absolute", targz_with(tar_file(f"/tmp/{PLANT}", b"x"))),
    ArchiveCase("zip-dotdot", zip_with((f"{TOP}/{TO_CANARY}{PLANT}", b"x")), ZIP),
    ArchiveCase("zip-absolute", zip_with((f"/tmp/{PLANT}", b"x")), ZIP),
    ArchiveCase("zip-backslash-dotdot", zip_with((f"..\\..\\..\\..\\canary\\{PLANT}", b"x")), ZIP),
    ArchiveCase("zip-drive-letter", zip_with((f"C:/{PLANT}", b"x")), ZIP),
    # links and devices
    ArchiveCase(
        "tar-symlink-out-then-write-through",
        targz_with(
            tar_special(f"{TOP}/link", tarfile.SYMTYPE, "/tmp"),
            tar_file(f"{TOP}/link/{PLANT}", b"x"),
        ),
    ),
    ArchiveCase(
        "tar-hardlink-to-etc-passwd",
        targz_with(tar_special(f"{TOP}/passwd", tarfile.LNKTYPE, "/etc/passwd")),
    ),
    ArchiveCase("tar-char-device", targz_with(tar_special(f"{TOP}/null", tarfile.CHRTYPE))),
    ArchiveCase("tar-block-device", targz_with(tar_special(f"{TOP}/disk", tarfile.BLKTYPE))),
    ArchiveCase("tar-fifo", targz_with(tar_special(f"{TOP}/pipe", tarfile.FIFOTYPE))),
    ArchiveCase(
        "zip-symlink", zip_with((zip_info(f"{TOP}/link", stat.S_IFLNK | 0o777), b"/tmp")), ZIP
    ),
    ArchiveCase(
        "zip-char-device", zip_with((zip_info(f"{TOP}/null", stat.S_IFCHR | 0o644), b"")), ZIP
    ),
    # bombs and counts
    ArchiveCase("targz-bomb-6gib-member", targz_bomb_one_member, update=False, **LIMITS),
    ArchiveCase("targz-bomb-96x64mib-members", targz_bomb_many_members, update=False, **LIMITS),
    ArchiveCase("targz-bomb-ratio-1000", targz_bomb_ratio, **LIMITS),
    ArchiveCase("tar-sparse-bomb-64gib", tar_sparse_bomb, **LIMITS),
    ArchiveCase("zip-bomb-640mib", zip_bomb_declared, ZIP, **LIMITS),
    ArchiveCase("zip-bomb-ratio-1000", zip_bomb_ratio, ZIP, **LIMITS),
    ArchiveCase("zip-bomb-size-lie", zip_bomb_size_lie, ZIP, **LIMITS),
    ArchiveCase("targz-10001-members", targz_too_many, update=False, **LIMITS),
    ArchiveCase("zip-10001-members", zip_too_many, ZIP, **LIMITS),
    # empty and not an archive
    ArchiveCase("empty-body", lambda f, v: b""),
    ArchiveCase("empty-gzip", lambda f, v: gzipped(b"")),
    ArchiveCase("empty-tar-gz", lambda f, v: gzipped(b"\0" * 10240)),
    ArchiveCase("empty-zip", zip_empty, ZIP),
    ArchiveCase("plain-text", lambda f, v: b"this is not an archive\n"),
    ArchiveCase("gzip-magic-then-garbage", lambda f, v: b"\x1f\x8b\x08\x00" + b"\xa5" * 4000),
    ArchiveCase("zip-magic-then-garbage", lambda f, v: b"PK\x03\x04" + b"\xa5" * 4000, ZIP),
    ArchiveCase("uncompressed-tar", tar_plain, "application/x-tar"),
    ArchiveCase("tar-bz2", tar_bz2, "application/x-tar"),
    # a good bundle with the wrong content type
    ArchiveCase(
        "content-type-text-plain",
        valid_targz,
        "text/plain",
        statuses=(400, 415),
        codes=("INVALID_BUNDLE", "INVALID_REQUEST"),
    ),
    ArchiveCase(
        "content-type-json",
        valid_targz,
        "application/json",
        statuses=(400, 415),
        codes=("INVALID_BUNDLE", "INVALID_REQUEST"),
    ),
    ArchiveCase(
        "content-type-multipart",
        valid_targz,
        "multipart/form-data; boundary=x",
        statuses=(400, 415),
        codes=("INVALID_BUNDLE", "INVALID_REQUEST"),
    ),
]

"""Bundle extraction: what a hostile archive can try, and what a normal one gets."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers import make_bundle

from supervisor.core.errors import FsupError
from supervisor.storage.bundles import BundleLimits, extract_bundle


def tar_with(*infos: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in infos:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def refused(data: bytes, dest: Path, limits: BundleLimits = BundleLimits()) -> FsupError:
    with pytest.raises(FsupError) as info:
        extract_bundle(data, dest, limits)
    assert info.value.code == "INVALID_BUNDLE"
    return info.value


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_single_top_folder_is_stripped(tmp_path: Path, fmt: str) -> None:
    extract_bundle(make_bundle({"formation.yaml": "id: x", "src/app.py": "print()"}, fmt), tmp_path)
    assert (tmp_path / "formation.yaml").read_text() == "id: x"
    assert (tmp_path / "src" / "app.py").exists()


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_flat_bundle_is_kept_as_is(tmp_path: Path, fmt: str) -> None:
    extract_bundle(make_bundle({"formation.yaml": "a", "app.py": "b"}, fmt, top=None), tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["app.py", "formation.yaml"]


def test_executable_bit_survives(tmp_path: Path) -> None:
    data = tar_with(
        (member("run.sh", mode=0o755), b"#!/bin/sh\n"), (member("x", mode=0o4777), b"x")
    )
    extract_bundle(data, tmp_path)
    assert stat.S_IMODE((tmp_path / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "x").stat().st_mode) == 0o755  # no setuid


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../evil", "'..'"),
        ("a/../../evil", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:/evil", "absolute"),
        ("a\\..\\evil", "backslash"),
    ],
)
def test_names_that_escape_are_refused(tmp_path: Path, name: str, words: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    error = refused(tar_with((member(name), b"x")), dest)
    assert words in error.message and error.details["member"] == name
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        (tarfile.SYMTYPE, {"linkname": "/etc/passwd"}),
        (tarfile.LNKTYPE, {"linkname": "a"}),
        (tarfile.CHRTYPE, {}),
        (tarfile.BLKTYPE, {}),
        (tarfile.FIFOTYPE, {}),
    ],
)
def test_links_and_devices_are_refused(tmp_path: Path, kind: bytes, extra: dict) -> None:
    refused(tar_with((member("a"), b"x"), (member("b", kind, **extra), b"")), tmp_path)
    assert not (tmp_path / "b").exists()


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    refused(buffer.getvalue(), tmp_path)


def test_member_count_is_bounded(tmp_path: Path) -> None:
    files = {f"f{i}": "x" for i in range(11)}
    for fmt in ("tar.gz", "zip"):
        error = refused(make_bundle(files, fmt), tmp_path, BundleLimits(max_members=10))
        assert "more than 10 members" in error.message


def test_unpacked_size_is_bounded(tmp_path: Path) -> None:
    data = make_bundle({"big": os.urandom(4096)})
    error = refused(data, tmp_path, BundleLimits(max_unpacked_bytes=4000))
    assert "limit" in error.message
    assert not any(tmp_path.iterdir())  # refused before writing


def test_compression_ratio_is_bounded(tmp_path: Path) -> None:
    bomb = make_bundle({"zeros": bytes(20 * 1024 * 1024)}, "zip")
    error = refused(bomb, tmp_path)
    assert "ratio" in error.message


def test_duplicate_members_are_refused(tmp_path: Path) -> None:
    refused(tar_with((member("a"), b"1"), (member("a"), b"2")), tmp_path)


def test_not_an_archive(tmp_path: Path) -> None:
    assert "neither" in refused(b"hello", tmp_path).message
    assert "readable" in refused(b"\x1f\x8b garbage", tmp_path).message
    assert "empty" in refused(b"", tmp_path).message


def pax_tar(pax: dict[str, str], name: str = "a", data: bytes = b"hello") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size, info.pax_headers = len(data), pax
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("pax", "words"),
    [
        ({"path": "../../evil"}, "'..'"),
        ({"path": "/etc/evil"}, "absolute"),
        ({"size": "-5"}, "negative"),
        ({"size": "9" * 30}, "limit"),
        ({"size": "99999"}, "ends inside this member"),
        (
            {
                "GNU.sparse.map": "0,5",
                "GNU.sparse.size": "999999999",
                "GNU.sparse.major": "1",
                "GNU.sparse.minor": "0",
            },
            "sparse",
        ),
    ],
)
def test_pax_headers_cannot_smuggle_names_or_sizes(
    tmp_path: Path, pax: dict[str, str], words: str
) -> None:
    error = refused(pax_tar(pax), tmp_path)
    assert words in error.message and "member" in error.details
    assert not (tmp_path.parent / "evil").exists()


def test_zip_members_are_all_checked_before_one_is_written(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("formation.yaml", "id: x")
        archive.writestr("x", "a file")
        archive.writestr("x/y", "through the file")
    error = refused(buffer.getvalue(), tmp_path)
    assert "goes through the file 'x'" in error.message and error.details["member"] == "x/y"
    assert not any(tmp_path.iterdir())


def test_a_damaged_tar_gz_is_never_half_deployed(tmp_path: Path) -> None:
    """The CRC is checked at the end of the stream: the members before it were written,
    but the bundle is refused (the caller removes the folder)."""
    data = bytearray(make_bundle({"formation.yaml": "id: x", "app.py": "print()"}))
    data[-8] ^= 0xFF
    assert "incorrect data check" in refused(bytes(data), tmp_path).message

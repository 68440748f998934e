"""Model archives are someone else's zip files: nothing outside the archive's folder, no bomb, bounded."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from v2serve.data.archives import ArchiveLimits, ArchiveRefused, extract, read_member


def make_zip(path: Path, members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_an_archive_extracts_into_its_folder(tmp_path):
    archive = make_zip(
        tmp_path / "m.mar", {"MAR-INF/MANIFEST.json": b"{}", "handler.py": b"x = 1\n", "sub/a.txt": b"a"}
    )
    folder = extract(archive, tmp_path / "out")
    assert (folder / "handler.py").read_bytes() == b"x = 1\n" and (folder / "sub" / "a.txt").read_bytes() == b"a"
    assert read_member(archive, "MAR-INF/MANIFEST.json") == b"{}" and read_member(archive, "nope") is None


@pytest.mark.parametrize("name", ["../escape.py", "/etc/evil", "a/../../escape", "C:/windows/evil", "..\\win.py"])
def test_a_member_naming_a_path_outside_is_refused_and_nothing_is_written(tmp_path, name):
    archive = make_zip(tmp_path / "m.mar", {"fine.txt": b"ok", name: b"evil"})
    with pytest.raises(ArchiveRefused, match="outside"):
        extract(archive, tmp_path / "deep" / "out")
    assert not (tmp_path / "deep" / "out").exists()
    assert not (tmp_path / "escape.py").exists() and not (tmp_path / "deep" / "escape").exists()


def test_a_symbolic_link_member_is_refused(tmp_path):
    archive = tmp_path / "m.mar"
    with zipfile.ZipFile(archive, "w") as zipped:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveRefused, match="symbolic link"):
        extract(archive, tmp_path / "out")


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    archive = make_zip(tmp_path / "bomb.mar", {"zeros.bin": bytes(64 * 1024**2)})
    assert archive.stat().st_size < 1024**2  # 64 MB of zeros in tens of kilobytes
    with pytest.raises(ArchiveRefused, match="zip bomb"):
        extract(archive, tmp_path / "out")
    with pytest.raises(ArchiveRefused, match="zip bomb"):
        read_member(archive, "zeros.bin")
    assert not (tmp_path / "out").exists()


def test_the_total_size_and_member_count_are_bounded(tmp_path):
    archive = make_zip(tmp_path / "m.mar", {f"f{i}": bytes(1000) for i in range(10)}, compression=zipfile.ZIP_STORED)
    with pytest.raises(ArchiveRefused, match="inflates to 10000 bytes"):
        extract(archive, tmp_path / "a", ArchiveLimits(max_total_bytes=5000))
    with pytest.raises(ArchiveRefused, match="holds 10 members"):
        extract(archive, tmp_path / "b", ArchiveLimits(max_members=5))
    assert extract(archive, tmp_path / "c", ArchiveLimits(max_total_bytes=10_000, max_members=10)).is_dir()


def test_a_member_read_into_memory_is_bounded(tmp_path):
    archive = make_zip(tmp_path / "m.mar", {"MAR-INF/MANIFEST.json": bytes(2000)}, compression=zipfile.ZIP_STORED)
    with pytest.raises(ArchiveRefused, match="more than 1000 bytes"):
        read_member(archive, "MAR-INF/MANIFEST.json", ArchiveLimits(max_member_bytes_read=1000))


def test_what_is_not_a_zip_is_refused_with_its_name(tmp_path):
    not_zip = tmp_path / "m.mar"
    not_zip.write_bytes(b"not a zip at all")
    with pytest.raises(ArchiveRefused, match="not a readable zip archive"):
        extract(not_zip, tmp_path / "out")

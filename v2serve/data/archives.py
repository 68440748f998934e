"""Zip archives of models (TorchServe's ``.mar``), read and extracted under bounds.

An archive is someone else's file: every member is checked before a byte of it is written. A member may not
name a path outside the folder it is extracted into (absolute, ``..``, a drive, a symbolic link), the
members together may not exceed ``ArchiveLimits`` (their count, their size as declared and as actually
inflated, and how far each one inflates: a zip bomb is refused, not extracted), and the archive is
extracted into a fresh folder that nothing else writes to.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO


class ArchiveRefused(ValueError):
    """The archive breaks a bound or names a path outside its folder; nothing of it is kept."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 10_000
    max_total_bytes: int = 16 * 1024**3
    """The most the members may take once extracted, all together."""
    max_member_bytes_read: int = 64 * 1024**2
    """The most a member that is read into memory (a manifest, a config) may hold."""
    max_ratio: int = 200
    """How many times its compressed size a member may inflate to (text compresses ~10x, zeros ~1000x)."""
    ratio_floor_bytes: int = 1024**2
    """Members smaller than this inflate as they like: a few kilobytes of zeros cost nothing."""


DEFAULT_LIMITS = ArchiveLimits()
_CHUNK = 1024**2


def read_member(archive: Path, name: str, limits: ArchiveLimits = DEFAULT_LIMITS) -> bytes | None:
    """One member's bytes (a manifest), or None when the archive has no such member."""
    with _open(archive) as zipped:
        try:
            info = zipped.getinfo(name)
        except KeyError:
            return None
        _check_ratio(info, limits)
        with zipped.open(info) as source:
            data = source.read(limits.max_member_bytes_read + 1)
        if len(data) > limits.max_member_bytes_read:
            raise ArchiveRefused(f"{archive}: {name} holds more than {limits.max_member_bytes_read} bytes")
        return data


def extract(archive: Path, into: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> Path:
    """Extract ``archive`` into the folder ``into``, which must not exist yet; ``into``. On any refusal the
    folder is removed again and ArchiveRefused says why."""
    into.mkdir(parents=True)
    try:
        with _open(archive) as zipped:
            members = zipped.infolist()
            _check_members(archive, members, limits)
            written = 0
            for info in members:
                target = into.joinpath(*_safe_parts(archive, info.filename))
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, target.open("wb") as sink:
                    written = _copy(source, sink, written, info, archive, limits)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(into, ignore_errors=True)
        raise ArchiveRefused(f"{archive} is damaged: {exc}") from None
    except BaseException:
        shutil.rmtree(into, ignore_errors=True)
        raise
    return into


def _open(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveRefused(f"{archive} is not a readable zip archive: {exc}") from None


def _check_members(archive: Path, members: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    if len(members) > limits.max_members:
        raise ArchiveRefused(f"{archive} holds {len(members)} members; the limit is {limits.max_members}")
    declared = sum(info.file_size for info in members)
    if declared > limits.max_total_bytes:
        raise ArchiveRefused(f"{archive} inflates to {declared} bytes; the limit is {limits.max_total_bytes}")
    for info in members:
        _safe_parts(archive, info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveRefused(f"{archive}: member {info.filename!r} is a symbolic link")
        _check_ratio(info, limits)


def _check_ratio(info: zipfile.ZipInfo, limits: ArchiveLimits) -> None:
    if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        raise ArchiveRefused(
            f"member {info.filename!r} inflates {info.file_size // max(info.compress_size, 1)}-fold "
            f"({info.compress_size} to {info.file_size} bytes): a zip bomb is not extracted"
        )


def _safe_parts(archive: Path, name: str) -> tuple[str, ...]:
    path = PurePosixPath(name.replace("\\", "/"))
    parts = tuple(part for part in path.parts if part not in ("", "."))
    if path.is_absolute() or not parts or ".." in parts or ":" in parts[0] or "\0" in name:
        raise ArchiveRefused(f"{archive}: member {name!r} names a path outside the archive's folder")
    return parts


def _copy(source: IO[bytes], sink: IO[bytes], written: int, info: zipfile.ZipInfo, archive: Path,
          limits: ArchiveLimits) -> int:  # fmt: skip
    """Copy one member, counting what it really inflates to: a member's header may understate its size."""
    copied = 0
    while chunk := source.read(_CHUNK):
        copied += len(chunk)
        written += len(chunk)
        if copied > max(info.file_size, 0) or written > limits.max_total_bytes:
            raise ArchiveRefused(f"{archive}: member {info.filename!r} inflates beyond what its header declares")
        sink.write(chunk)
    return written

"""Safe extraction of zip archives: no path traversal, links, encrypted members or zip bombs."""

from __future__ import annotations

import io
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from brats_core.errors import BratsError

_CHUNK = 1 << 20
#: Longest name of one file or folder that common file systems hold (ext4, XFS, APFS, NTFS: 255 bytes), and
#: longest member path accepted (well below PATH_MAX, 4096 on Linux, once the target folder is prepended).
MAX_NAME_BYTES = 255
MAX_MEMBER_PATH_BYTES = 1024


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on what :func:`safe_extract_zip` will extract (defaults fit a handful of BraTS cases)."""

    max_members: int = 64
    max_total_uncompressed: int = 2 * 1024**3
    #: Largest uncompressed/compressed ratio of the whole archive (one empty label map alone compresses ~400:1,
    #: so the ratio is checked on the totals, once they exceed ``ratio_floor`` bytes).
    max_ratio: float = 200.0
    max_member_size: int = 1024**3
    ratio_floor: int = 16 * 1024**2


def _is_stray(name: str) -> bool:
    """macOS/OS clutter and hidden files, never extracted or read: ``__MACOSX/``, ``.DS_Store``, ``._*``."""
    parts = [p for p in name.split("/") if p]
    return not parts or "__MACOSX" in parts or parts[-1].startswith(".")


def _shown(name: str, limit: int = 80) -> str:
    """A member name as messages show it: at most ``limit`` characters."""
    return name if len(name) <= limit else f"{name[:limit]}... ({len(name)} characters)"


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    longest = max((len(part.encode("utf-8", "surrogateescape")) for part in name.split("/")), default=0)
    if longest > MAX_NAME_BYTES:
        return f"has a file or folder name of {longest} bytes; file systems hold at most {MAX_NAME_BYTES}"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_MEMBER_PATH_BYTES:
        return f"is a path of more than {MAX_MEMBER_PATH_BYTES} bytes"
    if "\\" in name:
        return "contains a backslash (Windows path)"
    if name.startswith("/"):
        return "is an absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "starts with a drive letter"
    if ".." in name.split("/"):
        return "contains a '..' component (path traversal)"
    if "\x00" in name:
        return "contains a NUL character"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def safe_extract_zip(
    zip_path: str | Path | BinaryIO, dest: str | Path, limits: ZipLimits = ZipLimits(), name: str | None = None
) -> list[Path]:
    """Extract the regular files of ``zip_path`` (a path, or a seekable binary stream called ``name`` in
    messages) under ``dest`` and return their paths.

    Rejects (with :class:`BratsError`) corrupt archives, unsafe member names (absolute, drive letter, ``..``,
    backslash), symlinks, encrypted members and archives beyond ``limits`` (member count, sizes and
    compression ratio, checked on the declared sizes and again on the bytes actually decompressed).
    Directories and clutter (``__MACOSX/``, ``.DS_Store``, ``._*``) are skipped. Nothing is written outside
    ``dest``; on error the files already extracted by this call are removed.
    """
    is_path = isinstance(zip_path, (str, Path))
    if is_path:
        zip_path = Path(zip_path)
    label = f"archive '{name or (zip_path.name if is_path else 'upload.zip')}'"
    dest = Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
        size = zip_path.stat().st_size if is_path else zip_path.seek(0, io.SEEK_END)
    except FileNotFoundError as exc:
        raise BratsError(f"{label}: file not found ({zip_path})") from exc
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise BratsError(f"{label} is not a valid zip archive ({exc})") from exc
    written: list[Path] = []
    try:
        with archive:
            members = _check_members(archive, label, limits)
            compressed = min(sum(i.compress_size for i in members), size)
            dest.mkdir(parents=True, exist_ok=True)
            root = dest.resolve()
            total = 0
            for info in members:
                target = (root / info.filename).resolve()
                if not target.is_relative_to(root) or target == root:
                    raise BratsError(
                        f"{label}: member '{info.filename}' would be written outside the target folder"
                    )
                if target.exists():
                    raise BratsError(f"{label}: member '{info.filename}' appears twice")
                target.parent.mkdir(parents=True, exist_ok=True)
                size = 0
                written.append(target)
                with archive.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        size += len(chunk)
                        total += len(chunk)
                        if size > min(info.file_size, limits.max_member_size):
                            raise BratsError(
                                f"{label}: member '{info.filename}' decompresses to more than its declared "
                                f"{info.file_size} bytes (possible zip bomb)"
                            )
                        if total > limits.max_total_uncompressed or (
                            total > limits.ratio_floor and total > limits.max_ratio * max(compressed, 1)
                        ):
                            raise BratsError(f"{label} decompresses to too much data (possible zip bomb)")
                        out.write(chunk)
    except BratsError:
        _remove(written)
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        _remove(written)
        raise BratsError(f"{label} is corrupt or unreadable ({exc})") from exc
    return written


def _check_members(archive: zipfile.ZipFile, label: str, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """Validate every member's name and type and the declared sizes; return the members to extract."""
    members = []
    for info in archive.infolist():
        reason = _unsafe_reason(info)
        if reason:
            raise BratsError(f"{label}: member '{_shown(info.filename)}' {reason}; refusing to extract")
        if not info.is_dir() and not _is_stray(info.filename):
            members.append(info)
    if len(members) > limits.max_members:
        raise BratsError(f"{label} has {len(members)} files; at most {limits.max_members} are accepted")
    for info in members:
        if info.file_size > limits.max_member_size:
            raise BratsError(
                f"{label}: member '{info.filename}' is {info.file_size / 2**20:.0f} MiB uncompressed; "
                f"at most {limits.max_member_size / 2**20:.0f} MiB is accepted"
            )
    total = sum(i.file_size for i in members)
    compressed = sum(i.compress_size for i in members)
    if total > limits.max_total_uncompressed:
        raise BratsError(
            f"{label} is {total / 2**20:.0f} MiB uncompressed; "
            f"at most {limits.max_total_uncompressed / 2**20:.0f} MiB is accepted"
        )
    if total > limits.ratio_floor and total > limits.max_ratio * max(compressed, 1):
        raise BratsError(
            f"{label} has a compression ratio of {total / max(compressed, 1):.0f}:1 "
            f"(limit {limits.max_ratio:.0f}:1); refusing a possible zip bomb"
        )
    return members


def _remove(paths: list[Path]) -> None:
    """Best-effort removal of partly extracted files (a failure here must not hide the original error)."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            continue

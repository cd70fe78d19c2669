"""One way to turn files a user sent (the API's upload, the UI's selection) into validated case folders.

Accepts one ``.zip`` (one or more cases) or the four or five NIfTI files of one case. Client file names are
reduced to a safe basename (:func:`brats_core.names.safe_name`) and used only below the caller's folder; a zip
goes through :func:`brats_core.archive.safe_extract_zip`. Loose files, or a zip with its files at the root, go
into a folder named by their shared BraTS prefix (``BraTS20_001_t1.nii.gz`` -> ``BraTS20_001``), so the API and
the UI name a case alike. Every problem raises :class:`BratsError` naming the user's file, never a server path.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from brats_core.archive import ZipLimits, safe_extract_zip
from brats_core.cases import CaseFiles, find_cases
from brats_core.errors import BratsError
from brats_core.names import NAMING_HINT, nifti_stem, parse_name, safe_name

#: How messages name the folder of the unpacked files.
SHOWN_AS = "the upload"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class UploadLimits:
    zip_limits: ZipLimits = ZipLimits()
    #: Files one case may consist of (four modalities + segmentation).
    max_files_per_case: int = 5
    max_cases: int = 20


def case_folder_name(names: Sequence[str], fallback: str) -> str:
    """The prefix the files of one case share once ``_t1``, ``-t2f``... are removed, e.g. ``BraTS20_001``."""
    stems = [parsed[0] if (parsed := parse_name(n)) else nifti_stem(n) or n for n in names]
    prefix = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.commonprefix(stems)).strip("_-.")
    return prefix or fallback


def _check_names(names: list[str], limits: UploadLimits) -> None:
    zips = [n for n in names if n.lower().endswith(".zip")]
    others = [n for n in names if not n.lower().endswith(".zip") and nifti_stem(n) is None]
    if others:
        raise BratsError(f"file '{others[0]}' is neither a .zip nor a NIfTI file (.nii or .nii.gz)")
    if zips and len(names) > 1:
        raise BratsError("send either one .zip or the NIfTI files of one case, not several files with a zip")
    if len(names) > limits.max_files_per_case:
        raise BratsError(
            f"{len(names)} NIfTI files uploaded; one case has at most {limits.max_files_per_case} "
            "(t1, t1ce, t2, flair and an optional seg): put several cases in a .zip"
        )
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            same = "twice" if seen[name.lower()] == name else f"and {seen[name.lower()]!r} (names differ only in case)"
            raise BratsError(f"file {name!r} sent {same}: every file of a case needs its own name")
        seen[name.lower()] = name


def _save(source: BinaryIO, target: Path) -> None:
    """Copy an uploaded stream to a new file (its size is bounded by the caller)."""
    with open(target, "xb") as out:
        shutil.copyfileobj(source, out, _CHUNK)


def _unpack_zip(name: str, source: BinaryIO, folder: Path, limits: UploadLimits) -> set[Path]:
    """Extract the zip (read from ``source`` itself: no copy of it is written) into
    ``folder/files/<case folder>``; returns every extracted file."""
    extract_root = folder / "files" / "extracted"
    extracted = safe_extract_zip(source, extract_root, limits.zip_limits, name=name)
    not_nifti = [p for p in extracted if nifti_stem(p.name) is None]
    if not_nifti:
        member = not_nifti[0].relative_to(extract_root.resolve())
        raise BratsError(f"archive '{name}': member '{member}' is not a NIfTI file (.nii or .nii.gz)")
    flat = [p.name for p in extract_root.iterdir() if p.is_file()]
    case_root = folder / "files" / case_folder_name(flat, Path(name).stem)
    extract_root.rename(case_root)
    return {case_root.resolve() / p.relative_to(extract_root.resolve()) for p in extracted}


def unpack_upload(
    sources: Sequence[tuple[str | None, BinaryIO]], folder: Path, limits: UploadLimits = UploadLimits()
) -> list[CaseFiles]:
    """Save ``(client file name, stream)`` pairs under ``folder/files`` and find their cases (by id).

    ``folder`` is the caller's own, empty but for an optional empty ``files``. Files that belong to no case,
    more than ``limits.max_cases`` cases, or any bad file raise :class:`BratsError`; the cases' images are
    checked fully by :func:`brats_core.cases.load_case`.
    """
    if not sources:
        raise BratsError("no file uploaded: send one .zip or the .nii/.nii.gz files of one case")
    names = [safe_name(name) for name, _ in sources]
    _check_names(names, limits)
    files_dir = folder / "files"
    files_dir.mkdir(exist_ok=True)
    if names[0].lower().endswith(".zip"):
        all_files = _unpack_zip(names[0], sources[0][1], folder, limits)
    else:
        case_root = files_dir / case_folder_name(names, "case")
        case_root.mkdir()
        for name, (_, stream) in zip(names, sources, strict=True):
            _save(stream, case_root / name)
        all_files = {(case_root / n).resolve() for n in names}
    cases = find_cases(files_dir, shown_as=SHOWN_AS)
    used = {Path(p).resolve() for case in cases for p in (*case.images.values(), case.seg) if p is not None}
    unused = sorted(all_files - used)
    if unused:
        raise BratsError(
            f"file '{unused[0].relative_to(files_dir.resolve())}' is not part of any case; {NAMING_HINT}"
        )
    if len(cases) > limits.max_cases:
        raise BratsError(f"{len(cases)} cases uploaded; at most {limits.max_cases} per upload")
    return cases

"""Turning uploaded files into validated cases inside one upload's folder.

Client file names are reduced to a safe basename by :func:`brats_core.cases.safe_name` (no directories, drive
letters, backslashes or unusual characters) and used only below the upload's own folder; zips go through
:func:`brats_core.cases.safe_extract_zip` with the configured limits; the cases are found and fully loaded by
the shared case loader, so every problem surfaces here as a :class:`BratsError` naming the file.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import BinaryIO

from brats_core.archive import ZipLimits, safe_extract_zip
from brats_core.cases import CaseFiles, find_cases, load_case
from brats_core.config import MODALITIES
from brats_core.errors import BratsError
from brats_core.names import NAMING_HINT, nifti_stem, parse_name, safe_name
from sspp_unet_api.app.config import Settings
from sspp_unet_api.app.voxels import check_voxels

CHUNK = 1 << 20


def _case_folder_name(names: list[str], fallback: str) -> str:
    """The prefix the files of one case share once ``_t1``, ``-t2f``... are removed, e.g. ``BraTS20_001``."""
    stems = [parsed[0] if (parsed := parse_name(n)) else nifti_stem(n) or n for n in names]
    prefix = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.commonprefix(stems)).strip("_-.")
    return prefix or fallback


def _save(source: BinaryIO, target: Path) -> None:
    """Copy an uploaded stream to a new file (its size is already bounded by the request-size middleware)."""
    with open(target, "xb") as out:
        shutil.copyfileobj(source, out, CHUNK)


def zip_limits(settings: Settings) -> ZipLimits:
    """Zip limits from the settings: members bounded by both the member limit and cases x files per case."""
    return ZipLimits(
        max_members=min(settings.max_zip_members, settings.max_cases_per_upload * settings.max_members_per_case),
        max_total_uncompressed=settings.max_uncompressed_bytes,
        max_ratio=settings.max_compression_ratio,
        max_member_size=settings.max_uncompressed_bytes,
    )


def ingest(sources: list[tuple[str | None, BinaryIO]], folder: Path, settings: Settings) -> list[dict]:
    """Save ``(client file name, stream)`` pairs under ``folder/files`` and validate them as cases.

    Accepts one ``.zip`` (one or more cases) or the four or five NIfTI files of one case. Returns one record
    per case: id, image and seg paths relative to ``folder``, shape and spacing. Raises :class:`BratsError`
    (messages name the client's files, never server paths).
    """
    try:
        return _ingest(sources, folder, settings)
    except BratsError as exc:
        message = str(exc)
        for prefix in (folder / "files", folder / "incoming"):
            message = message.replace(f"{prefix}{os.sep}", "")
        message = message.replace(str(folder / "files"), "the upload").replace(f"{folder}{os.sep}", "")
        raise type(exc)(message) from None


def _ingest(sources: list[tuple[str | None, BinaryIO]], folder: Path, settings: Settings) -> list[dict]:
    if not sources:
        raise BratsError("no file uploaded: send one .zip or the .nii/.nii.gz files of one case as 'files'")
    names = [safe_name(name) for name, _ in sources]
    zips = [n for n in names if n.lower().endswith(".zip")]
    others = [n for n in names if not n.lower().endswith(".zip") and nifti_stem(n) is None]
    if others:
        raise BratsError(f"file '{others[0]}' is neither a .zip nor a NIfTI file (.nii or .nii.gz)")
    if zips and len(names) > 1:
        raise BratsError("send either one .zip or the NIfTI files of one case, not several files with a zip")
    if len(names) > settings.max_members_per_case:
        raise BratsError(
            f"{len(names)} NIfTI files uploaded; one case has at most {settings.max_members_per_case} "
            "(t1, t1ce, t2, flair and an optional seg): put several cases in a .zip"
        )
    if len(set(map(str.lower, names))) != len(names):
        raise BratsError(f"two uploaded files have the same name: {', '.join(sorted(names))}")
    files_dir = folder / "files"
    if zips:
        incoming = folder / "incoming"
        incoming.mkdir()
        archive = incoming / names[0]
        _save(sources[0][1], archive)
        extract_root = files_dir / "extracted"
        extracted = safe_extract_zip(archive, extract_root, zip_limits(settings))
        archive.unlink()
        not_nifti = [p for p in extracted if nifti_stem(p.name) is None]
        if not_nifti:
            member = not_nifti[0].relative_to(extract_root.resolve())
            raise BratsError(f"archive '{names[0]}': member '{member}' is not a NIfTI file (.nii or .nii.gz)")
        flat = [p.name for p in extract_root.iterdir() if p.is_file()]
        case_root = files_dir / _case_folder_name(flat, Path(names[0]).stem)
        extract_root.rename(case_root)
        all_files = {case_root.resolve() / p.relative_to(extract_root.resolve()) for p in extracted}
    else:
        case_root = files_dir / _case_folder_name(names, "case")
        case_root.mkdir()
        for name, (_, stream) in zip(names, sources, strict=True):
            _save(stream, case_root / name)
        all_files = {(case_root / n).resolve() for n in names}
    cases = find_cases(files_dir)
    used = {Path(p).resolve() for case in cases for p in (*case.images.values(), case.seg) if p is not None}
    unused = sorted(all_files - used)
    if unused:
        raise BratsError(
            f"file '{unused[0].relative_to(files_dir.resolve())}' is not part of any case; {NAMING_HINT}"
        )
    if len(cases) > settings.max_cases_per_upload:
        raise BratsError(f"{len(cases)} cases uploaded; at most {settings.max_cases_per_upload} per upload")
    check_voxels(cases, settings.max_voxels_per_volume, settings.max_voxels_per_case)
    return [_case_record(files, folder) for files in cases]


def _case_record(files: CaseFiles, folder: Path) -> dict:
    """Load the case fully (catching corrupt, truncated or mismatched files) and describe it."""
    case = load_case(files)
    root = folder.resolve()

    def relative(path: Path) -> str:
        return Path(path).resolve().relative_to(root).as_posix()

    return {
        "case_id": case.case_id,
        "images": {m: relative(files.images[m]) for m in MODALITIES},
        "seg": relative(files.seg) if files.seg is not None else None,
        "shape": list(case.shape),
        "spacing": [float(s) for s in case.spacing],
    }


def case_files(record: dict, folder: Path) -> CaseFiles:
    """The :class:`CaseFiles` of a case record written by :func:`ingest`."""
    return CaseFiles(
        case_id=record["case_id"],
        images={m: folder / p for m, p in record["images"].items()},
        seg=folder / record["seg"] if record["seg"] else None,
    )

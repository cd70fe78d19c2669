"""Uploaded files as validated cases inside one upload's folder, and the records the storage keeps of them.

The files are unpacked by :func:`brats_core.uploads.unpack_upload` (the UI's local copy is made the same way)
with the configured limits; each case is then fully loaded by the shared case loader, so every problem
surfaces here as a :class:`BratsError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from brats_core.archive import ZipLimits
from brats_core.cases import CaseFiles, load_case
from brats_core.config import MODALITIES
from brats_core.uploads import SHOWN_AS, UploadLimits, unpack_upload
from sspp_unet_api.app.config import Settings
from sspp_unet_api.app.voxels import check_voxels


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

    Accepts one ``.zip`` (one or more cases) or the four or five NIfTI files of one case
    (:func:`brats_core.uploads.unpack_upload`). Returns one record per case: id, image and seg paths relative
    to ``folder``, shape and spacing. Raises :class:`BratsError` (messages name the client's files, never
    server paths).
    """
    limits = UploadLimits(zip_limits(settings), settings.max_members_per_case, settings.max_cases_per_upload)
    cases = unpack_upload(sources, folder, limits)
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
    """The :class:`CaseFiles` of a case record written by :func:`ingest` (messages name "the upload")."""
    return CaseFiles(
        case_id=record["case_id"],
        images={m: folder / p for m, p in record["images"].items()},
        seg=folder / record["seg"] if record["seg"] else None,
        shown_as=(folder / "files", SHOWN_AS),
    )

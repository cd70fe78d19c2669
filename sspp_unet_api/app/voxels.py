"""Voxel bounds per volume and per case, read from the NIfTI headers before any image data is decompressed.

A 1 MB upload of four 400^3 zero volumes decompresses to gigabytes of arrays: the shapes are checked first from
the headers alone (``nib.load`` reads only the header of a ``.nii.gz``). A file whose header cannot be read is
left to the case loader, which names the problem.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from brats_core.cases import CaseFiles
from brats_core.errors import BratsError


def header_voxels(path: Path) -> tuple[tuple[int, ...], int] | None:
    """(shape, voxel count) from the header of a NIfTI file; None when the header is unreadable."""
    try:
        shape = tuple(int(s) for s in nib.load(path).shape)
    except Exception:  # noqa: BLE001 (any failure here is diagnosed by the case loader)
        return None
    return shape, int(np.prod(shape, dtype=np.int64))


def check_voxels(cases: list[CaseFiles], per_volume: int, per_case: int) -> None:
    """Raise :class:`BratsError` naming the file (or case) whose header declares more voxels than allowed."""
    for case in cases:
        total = 0
        for path in [*case.images.values(), *([case.seg] if case.seg is not None else [])]:
            found = header_voxels(Path(path))
            if found is None:
                continue
            shape, voxels = found
            if voxels > per_volume:
                raise BratsError(
                    f"{case.display(path)}: image of shape {'x'.join(map(str, shape))} has {voxels:,} voxels; at most "
                    f"{per_volume:,} per volume are accepted (BRATS_MAX_VOXELS_PER_VOLUME)"
                )
            total += voxels
        if total > per_case:
            raise BratsError(
                f"case '{case.case_id}': its files hold {total:,} voxels in all; at most {per_case:,} per case "
                "are accepted (BRATS_MAX_VOXELS_PER_CASE)"
            )

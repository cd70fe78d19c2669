"""Cases that hold the same scan under two names: one patient that a split would put on both sides.

BraTS releases rename their cases: BraTS 2018's ``Brats18_2013_11_1`` is BraTS 2020's ``BraTS20_Training_147``,
and BraTS 2021 holds the 2020 cases again under ``BraTS2021_*`` ids. A folder that mixes releases therefore
holds patients twice, which no case id shows. Two cases whose T1ce volumes correlate at
:data:`THRESHOLD` or more inside the brain are taken for one scan; different patients registered to the same
atlas stay far below it (at most 0.35 over the 27 shared cases: Brats18_CBICA_ABM_1 and _AQN_1, tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brats_core.cases import CaseFiles
from brats_core.errors import BratsError
from brats_core.nifti import read_nifti
from brats_core.split import patient_id

#: Correlation of two cases' T1ce (every 4th voxel, inside both brains) from which they are one scan.
THRESHOLD = 0.95
_STEP = 4


def signature(files: CaseFiles) -> tuple[tuple[int, ...], np.ndarray]:
    """The case's T1ce shape and its volume sampled every :data:`_STEP` voxels, as float32."""
    path = files.images["t1ce"]
    data, _, _ = read_nifti(path, files.display(path))
    return tuple(data.shape), np.asarray(data[::_STEP, ::_STEP, ::_STEP], dtype=np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two sampled volumes over the voxels that are brain (non-zero) in both."""
    both = (a != 0) & (b != 0)
    if both.sum() < 100:
        return 0.0
    x, y = a[both] - a[both].mean(), b[both] - b[both].mean()
    scale = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / scale) if scale > 0 else 0.0


def same_scans(cases: Sequence[CaseFiles], threshold: float = THRESHOLD) -> list[tuple[str, str, float]]:
    """Pairs ``(case id, case id, correlation)`` of different patients (:func:`patient_id`) that hold the same
    scan; timepoints of one BraTS 2023+ patient are one patient already and are not compared."""
    signatures = {files.case_id: signature(files) for files in cases}
    ids = sorted(signatures)
    pairs = []
    for i, first in enumerate(ids):
        for second in ids[i + 1:]:
            (shape_a, a), (shape_b, b) = signatures[first], signatures[second]
            if shape_a != shape_b or patient_id(first) == patient_id(second):
                continue
            r = correlation(a, b)
            if r >= threshold:
                pairs.append((first, second, r))
    return pairs


def check_distinct_scans(cases: Sequence[CaseFiles], where: str) -> None:
    """:class:`BratsError` naming every pair of ``cases`` (found in ``where``) that holds the same scan."""
    pairs = same_scans(cases)
    if pairs:
        shown = "; ".join(f"{a} and {b} (T1ce correlation {r:.3f})" for a, b, r in pairs[:10])
        raise BratsError(
            f"{where}: {len(pairs)} pair(s) of cases hold the same scan, one patient under two names (as when "
            f"BraTS releases are mixed): {shown}. Keep one case of each pair; a split would put the patient "
            "on both sides"
        )

"""Cases that hold the same scan under two names: one patient that a split would put on both sides.

BraTS releases rename their cases: BraTS 2018's ``Brats18_2013_11_1`` is BraTS 2020's ``BraTS20_Training_147``,
and BraTS 2021 holds the 2020 cases again under ``BraTS2021_*`` ids. A folder that mixes releases therefore
holds patients twice, which no case id shows. Two cases whose T1ce volumes, sampled every 8th voxel and
standardised inside the brain, have a cosine similarity of :data:`THRESHOLD` or more are taken for one scan;
different patients registered to the same atlas stay far below it (the 27 shared cases' closest pair is tested).
All pairs are compared at once (one matrix product), so a whole BraTS release takes seconds beyond reading it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brats_core.cases import CaseFiles
from brats_core.errors import BratsError
from brats_core.nifti import read_nifti
from brats_core.split import patient_id

#: Similarity (below) of two cases' T1ce from which they are one scan.
THRESHOLD = 0.95
_STEP = 8


def signature(files: CaseFiles) -> tuple[tuple[int, ...], np.ndarray]:
    """The case's T1ce shape and its volume sampled every :data:`_STEP` voxels, standardised over its brain
    (non-zero voxels) and 0 outside it, as a unit-length float32 vector (all zeros for an empty volume)."""
    path = files.images["t1ce"]
    data, _, _ = read_nifti(path, files.display(path))
    sampled = np.asarray(data[::_STEP, ::_STEP, ::_STEP], dtype=np.float32).ravel()
    brain = sampled != 0
    vector = np.zeros_like(sampled)
    if brain.sum() > 1:
        inside = sampled[brain]
        vector[brain] = (inside - inside.mean()) / (inside.std() or 1.0)
    norm = float(np.linalg.norm(vector))
    return tuple(data.shape), vector / norm if norm > 0 else vector


def same_scans(cases: Sequence[CaseFiles], threshold: float = THRESHOLD) -> list[tuple[str, str, float]]:
    """Pairs ``(case id, case id, similarity)`` of different patients (:func:`patient_id`) that hold the same
    scan: the cosine of their :func:`signature` vectors (1 for a copy, whatever its dtype or intensity scale), for
    every pair of cases of one shape at once. Timepoints of one BraTS 2023+ patient are one patient already."""
    by_shape: dict[tuple[int, ...], list[tuple[str, np.ndarray]]] = {}
    for files in cases:
        shape, vector = signature(files)
        by_shape.setdefault(shape, []).append((files.case_id, vector))
    pairs = []
    for group in by_shape.values():
        ids = [case_id for case_id, _ in group]
        similarity = np.stack([vector for _, vector in group]) @ np.stack([vector for _, vector in group]).T
        for i, j in zip(*np.nonzero(np.triu(similarity >= threshold, k=1)), strict=True):
            if patient_id(ids[i]) != patient_id(ids[j]):
                first, second = sorted((ids[i], ids[j]))
                pairs.append((first, second, float(similarity[i, j])))
    return sorted(pairs)


def check_distinct_scans(cases: Sequence[CaseFiles], where: str) -> None:
    """:class:`BratsError` naming every pair of ``cases`` (found in ``where``) that holds the same scan."""
    pairs = same_scans(cases)
    if pairs:
        shown = "; ".join(f"{a} and {b} (T1ce similarity {r:.3f})" for a, b, r in pairs[:10])
        raise BratsError(
            f"{where}: {len(pairs)} pair(s) of cases hold the same scan, one patient under two names (as when "
            f"BraTS releases are mixed): {shown}. Keep one case of each pair; a split would put the patient "
            "on both sides"
        )

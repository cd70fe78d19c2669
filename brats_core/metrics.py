"""Per-case segmentation metrics in 3D, in the original voxel space, with the BraTS 2020 conventions.

Conventions (one place, used by every model):

- ``dice``: both masks empty -> 1.0; exactly one empty -> 0.0.
- ``hd95`` (mm): both empty -> 0.0; exactly one empty -> :data:`~brats_core.config.HD95_ONE_EMPTY` (373.13).
  Otherwise the symmetric 95th percentile Hausdorff distance between the surface voxels (mask minus its
  6-connected erosion) of both masks, i.e. the maximum of the two directed 95th percentiles, as BraTS and
  ``monai.metrics.compute_hausdorff_distance(percentile=95)`` compute it.
- ``sensitivity`` = TP / |ref|; with an empty reference it is 1.0 if the prediction is empty too, else 0.0
  (any predicted voxel is then a false detection, mirroring the Dice convention).
- ``specificity`` = TN / |not ref| over every voxel of the volume (background included, so it is close to 1
  for any sensible prediction); with no negative voxel it is 1.0 (no false positive is possible).

Background is never averaged into a Dice: regions are WT={1,2,4}, TC={1,4}, ET={4}.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from brats_core.config import HD95_ONE_EMPTY, REGIONS
from brats_core.errors import BratsError

#: In-plane size the original project resized every axial slice to before scoring (legacy metric only).
LEGACY_SLICE_SIZE = 128


def _bool(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask, dtype=bool)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two boolean masks; 1.0 when both are empty."""
    pred, ref = _bool(pred), _bool(ref)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & ref)) / total


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """True positive rate TP / |ref|; with an empty reference 1.0 if ``pred`` is empty, else 0.0."""
    pred, ref = _bool(pred), _bool(ref)
    positives = int(np.count_nonzero(ref))
    if positives == 0:
        return 0.0 if pred.any() else 1.0
    return int(np.count_nonzero(pred & ref)) / positives


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """True negative rate TN / |not ref| over all voxels; 1.0 when there is no negative voxel."""
    pred, ref = _bool(pred), _bool(ref)
    negatives = ref.size - int(np.count_nonzero(ref))
    if negatives == 0:
        return 1.0
    return int(np.count_nonzero(~pred & ~ref)) / negatives


def _union_box(pred: np.ndarray, ref: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Bounding box of ``pred | ref`` grown by ``margin`` voxels (clipped to the array)."""
    union = pred | ref
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, union.shape[axis])))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: the mask minus its erosion (voxels on the array border count as boundary)."""
    return mask & ~ndimage.binary_erosion(mask)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Symmetric 95th percentile Hausdorff distance in mm between two boolean masks (see module docstring).

    The masks are cropped to their union bounding box plus one voxel before the erosions and distance
    transforms, which is exact (every surface voxel lies inside the box) and makes a 240x240x155 case cheap.
    """
    pred, ref = _bool(pred), _bool(ref)
    if pred.shape != ref.shape:
        raise BratsError(f"hd95: prediction shape {pred.shape} differs from reference shape {ref.shape}")
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 0.0
    if has_pred != has_ref:
        return HD95_ONE_EMPTY
    box = _union_box(pred, ref)
    pred_surface, ref_surface = _surface(pred[box]), _surface(ref[box])
    sampling = np.asarray(spacing, dtype=np.float64)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=sampling)[pred_surface]
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)[ref_surface]
    return float(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)))


def region_metrics(
    pred_labels: np.ndarray, ref_labels: np.ndarray, spacing: Sequence[float]
) -> dict[str, dict[str, float]]:
    """Dice, HD95 (mm), sensitivity and specificity of WT, TC and ET for two label maps (0/1/2/4)."""
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape:
        raise BratsError(
            f"prediction shape {pred_labels.shape} differs from reference shape {ref_labels.shape}"
        )
    out: dict[str, dict[str, float]] = {}
    for region, values in REGIONS.items():
        pred, ref = np.isin(pred_labels, values), np.isin(ref_labels, values)
        out[region] = {
            "dice": dice(pred, ref),
            "hd95": hd95(pred, ref, spacing),
            "sensitivity": sensitivity(pred, ref),
            "specificity": specificity(pred, ref),
        }
    return out


def _resize_nearest(masks: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes to ``size`` x ``size`` (source index floor(i*n/size))."""
    rows = np.arange(size) * masks.shape[0] // size
    cols = np.arange(size) * masks.shape[1] // size
    return masks[rows][:, cols]


def _slice_dice(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Dice of each axial slice of (S,S,Z) masks; 1.0 for a slice where both are empty."""
    inter = np.count_nonzero(pred & ref, axis=(0, 1))
    total = np.count_nonzero(pred, axis=(0, 1)) + np.count_nonzero(ref, axis=(0, 1))
    safe = np.maximum(total, 1)
    return np.where(total == 0, 1.0, 2.0 * inter / safe)


def legacy_slice_score(pred_labels: np.ndarray, ref_labels: np.ndarray) -> float:
    """LEGACY, NOT COMPARABLE to Dice: the original project's score, kept only to put its numbers beside ours.

    For every axial slice (last axis) the whole-tumour masks are resized to 128x128 with nearest neighbour;
    the slice scores the mean of the background Dice and the whole-tumour Dice (a class empty in both
    scores 1), and the volume scores the mean over all slices. Background dominates and tumour-free slices
    score 1 whatever the tumour looks like, so an empty prediction already scores high.
    """
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape or pred_labels.ndim != 3:
        raise BratsError(
            f"legacy score needs two 3D label maps of one shape, got {pred_labels.shape} and {ref_labels.shape}"
        )
    wt_values = REGIONS["WT"]
    pred = _resize_nearest(np.isin(pred_labels, wt_values), LEGACY_SLICE_SIZE)
    ref = _resize_nearest(np.isin(ref_labels, wt_values), LEGACY_SLICE_SIZE)
    per_slice = (_slice_dice(~pred, ~ref) + _slice_dice(pred, ref)) / 2.0
    return float(per_slice.mean())

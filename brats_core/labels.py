"""Conversions between BraTS labels (0/1/2/4), class indices (0..3) and regions (WT, TC, ET)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brats_core.config import LABELS, REGIONS

_LABEL_TO_CLASS = np.zeros(256, dtype=np.uint8)
for _index, _label in enumerate(LABELS):
    _LABEL_TO_CLASS[_label] = _index
_CLASS_TO_LABEL = np.asarray(LABELS, dtype=np.uint8)
#: Thresholds of the WT, TC and ET probabilities of a regions head when none were tuned.
DEFAULT_THRESHOLDS: tuple[float, float, float] = (0.5, 0.5, 0.5)


def labels_to_classes(labels: np.ndarray) -> np.ndarray:
    """Map labels 0/1/2/4 to contiguous class indices 0/1/2/3 (uint8)."""
    return _LABEL_TO_CLASS[np.asarray(labels, dtype=np.uint8)]


def classes_to_labels(classes: np.ndarray) -> np.ndarray:
    """Map class indices 0/1/2/3 back to labels 0/1/2/4 (uint8)."""
    return _CLASS_TO_LABEL[np.asarray(classes, dtype=np.intp)]


def labels_to_regions(labels: np.ndarray) -> np.ndarray:
    """Boolean masks of shape ``(3, *labels.shape)`` for WT, TC and ET, in that order."""
    labels = np.asarray(labels)
    return np.stack([np.isin(labels, values) for values in REGIONS.values()])


def regions_to_labels(regions: np.ndarray) -> np.ndarray:
    """Inverse of :func:`labels_to_regions` for nested masks: ET -> 4, TC \\ ET -> 1, WT \\ TC -> 2."""
    wt, tc, et = (np.asarray(r, dtype=bool) for r in regions)
    tc = tc | et
    wt = wt | tc
    out = np.zeros(wt.shape, dtype=np.uint8)
    out[wt] = 2
    out[tc] = 1
    out[et] = 4
    return out


def region_scores_to_labels(scores: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Labels 0/1/2/4 (uint8) from region scores ``(3, ...)`` (WT, TC, ET probabilities, e.g. of a sigmoid head).

    Each region is its score above its threshold; the masks are then nested as in :func:`regions_to_labels`
    (ET -> 4, TC \\ ET -> 1, WT \\ TC -> 2: an ET or TC voxel is tumour even where the WT score is lower).
    """
    scores = np.asarray(scores)
    if scores.shape[0] != len(REGIONS) or len(thresholds) != len(REGIONS):
        raise ValueError(
            f"need {len(REGIONS)} region scores and thresholds (WT, TC, ET), got {scores.shape[0]} and {len(thresholds)}"
        )
    return regions_to_labels([score > threshold for score, threshold in zip(scores, thresholds, strict=True)])

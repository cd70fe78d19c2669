"""Conversions between BraTS labels (0/1/2/4), class indices (0..3) and regions (WT, TC, ET)."""

from __future__ import annotations

import numpy as np

from brats_core.config import LABELS, REGIONS

_LABEL_TO_CLASS = np.zeros(256, dtype=np.uint8)
for _index, _label in enumerate(LABELS):
    _LABEL_TO_CLASS[_label] = _index
_CLASS_TO_LABEL = np.asarray(LABELS, dtype=np.uint8)


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

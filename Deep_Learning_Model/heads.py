"""The two output heads of the 2D networks, from logits to BraTS labels in the original grid.

- ``softmax``: logits over the classes (background, NCR/NET, ED, ET; or background and whole tumour); the
  probabilities are a softmax and the label of a voxel is the argmax after the bilinear restore
  (:meth:`brats_core.preprocessing.Geometry.restore_argmax`).
- ``regions``: three logits WT, TC, ET (nnU-Net's region-based BraTS training); the probabilities are
  sigmoids, restored bilinearly, thresholded (0.5 unless tuned) and nested into labels ET -> 4, TC \\ ET -> 1,
  WT \\ TC -> 2 (:meth:`Geometry.restore_regions`, :func:`brats_core.labels.region_scores_to_labels`).

Softmax class probabilities convert to region probabilities by summing the classes of each region, which lets
models with different heads be fused (:mod:`Deep_Learning_Model.fusion`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from brats_core.config import LABELS, REGIONS
from brats_core.labels import DEFAULT_THRESHOLDS
from brats_core.preprocessing import Geometry
from Deep_Learning_Model.model import BINARY_TUMOUR_LABEL, HEADS

#: Class indices (0..3 as :func:`brats_core.labels.labels_to_classes`) making up each region WT, TC, ET.
REGION_CLASSES: tuple[tuple[int, ...], ...] = tuple(
    tuple(LABELS.index(label) for label in labels) for labels in REGIONS.values()
)


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    return head


def probabilities(logits: torch.Tensor, head: str) -> torch.Tensor:
    """fp32 probabilities (N, K, H, W) of logits (N, K, H, W): softmax over K, or one sigmoid per region."""
    logits = logits.float()
    return torch.sigmoid(logits) if check_head(head) == "regions" else torch.softmax(logits, dim=1)


def region_probabilities(probs: torch.Tensor, head: str) -> torch.Tensor:
    """WT, TC, ET probabilities (N, 3, ...) of ``head``'s probabilities (4-class softmax: sums of classes)."""
    if check_head(head) == "regions":
        return probs
    if probs.shape[1] != len(LABELS):
        raise ValueError(f"region probabilities need a {len(LABELS)}-class softmax, got {probs.shape[1]} classes")
    return torch.stack([probs[:, list(group)].sum(dim=1) for group in REGION_CLASSES], dim=1)


def class_labels(num_classes: int) -> tuple[int, ...]:
    """BraTS label of each class index: 0/1/2/4 of a 4-class model, 0 and the whole tumour of a binary one."""
    return (0, BINARY_TUMOUR_LABEL) if num_classes == 2 else LABELS


def restore_labels(
    probs: torch.Tensor | np.ndarray,
    geometry: Geometry,
    head: str = "softmax",
    thresholds: Sequence[float] | None = None,
    chunk: int = 32,
) -> np.ndarray:
    """BraTS labels (X, Y, Z) uint8 in the original grid from slice probabilities (Z', K, S, S) of ``head``."""
    if check_head(head) == "regions":
        return geometry.restore_regions(probs, DEFAULT_THRESHOLDS if thresholds is None else thresholds, chunk)
    return geometry.restore_argmax(probs, class_labels(probs.shape[1]), chunk)

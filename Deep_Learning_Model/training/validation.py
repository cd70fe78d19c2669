"""Validation during training: whole cases predicted like at inference, scored per case in 3D.

Each validation case's slices go through :func:`Deep_Learning_Model.predictor.predict_volume` (the code path of
the shipped predictor) back to the original voxel grid, and :func:`brats_core.metrics.region_metrics` scores
WT/TC/ET against the case's native-resolution labels. The cache stores those labels cropped to
``native_box`` (the brain's bounding box grown to hold every labelled voxel); the prediction is zero outside
the brain box, so scoring inside ``native_box`` gives the same Dice and HD95 as the full volume.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from brats_core.cache import CacheEntry
from brats_core.config import REGIONS
from brats_core.metrics import region_metrics
from Deep_Learning_Model.predictor import predict_volume

#: Metrics averaged over the validation cases (per region) and logged.
LOGGED_METRICS: tuple[str, ...] = ("dice", "hd95")


def validate_case(model: nn.Module, entry: CacheEntry, device: torch.device, context: int, batch_size: int,
                  tta: bool, amp: bool) -> dict[str, dict[str, float]]:
    """Region metrics of one cached case (``model`` in eval mode on ``device``)."""
    labels = predict_volume(model, entry.images, entry.geometry, device, context, tta, batch_size, amp)
    x0, x1, y0, y1, z0, z1 = entry.native_box
    return region_metrics(labels[x0:x1, y0:y1, z0:z1], entry.native_labels, entry.spacing)


def validate(model: nn.Module, entries: list[CacheEntry], device: torch.device, context: int,
             batch_size: int, tta: bool = False, amp: bool = True) -> dict:
    """Mean metrics over ``entries``: ``{"WT": {"dice", "hd95"}, "TC": ..., "ET": ..., "mean_dice", "cases"}``.

    ``amp`` is the run's setting: the predictor's autocast, the same dtype as training, or fp32.

    ``mean_dice`` (mean over WT, TC and ET of the per-region mean Dice) selects the best epoch; ``cases``
    maps each case id to its full region metrics.
    """
    was_training = model.training
    model.eval()
    try:
        cases = {e.case_id: validate_case(model, e, device, context, batch_size, tta, amp) for e in entries}
    finally:
        model.train(was_training)
    summary: dict = {
        region: {m: float(np.mean([c[region][m] for c in cases.values()])) for m in LOGGED_METRICS}
        for region in REGIONS
    }
    summary["mean_dice"] = float(np.mean([summary[region]["dice"] for region in REGIONS]))
    summary["cases"] = cases
    return summary

"""Metrics: hand-computed values, BraTS empty-mask conventions, agreement with MONAI, the legacy score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from scipy import ndimage

from brats_core.config import HD95_ONE_EMPTY
from brats_core.errors import BratsError
from brats_core.metrics import dice, hd95, legacy_slice_score, region_metrics, sensitivity, specificity

SHAPE = (12, 10, 8)


def _mask(*points: tuple[int, int, int], shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for point in points:
        mask[point] = True
    return mask


def _blob(seed: int, shape: tuple[int, int, int] = (40, 36, 24), level: float = 0.55) -> np.ndarray:
    noise = np.random.default_rng(seed).random(shape)
    smooth = ndimage.gaussian_filter(noise, sigma=3)
    return smooth > np.quantile(smooth, level)


def test_dice_sensitivity_specificity_hand_computed() -> None:
    pred = np.zeros(SHAPE, dtype=bool)
    ref = np.zeros(SHAPE, dtype=bool)
    pred[0, 0, :4] = True  # 4 voxels
    ref[0, 0, 1:7] = True  # 6 voxels, 3 shared with pred
    assert dice(pred, ref) == pytest.approx(2 * 3 / 10)
    assert sensitivity(pred, ref) == pytest.approx(3 / 6)
    negatives = pred.size - 6
    assert specificity(pred, ref) == pytest.approx((negatives - 1) / negatives)


def test_hd95_two_points_anisotropic_spacing() -> None:
    spacing = (2.0, 1.0, 3.0)
    # (1,1,1) -> (4,1,1): 3 voxels along axis 0 at 2 mm.
    assert hd95(_mask((1, 1, 1)), _mask((4, 1, 1)), spacing) == pytest.approx(6.0)
    # (1,1,1) -> (1,1,3): 2 voxels along axis 2 at 3 mm; symmetric.
    assert hd95(_mask((1, 1, 3)), _mask((1, 1, 1)), spacing) == pytest.approx(6.0)


def test_hd95_is_max_of_directed_percentiles() -> None:
    spacing = (1.0, 0.5, 2.0)
    pred = _mask((5, 5, 5))
    ref = _mask((5, 5, 7), (5, 9, 5))  # 4 mm and 2 mm from pred
    # pred -> ref: nearest is 2 mm; ref -> pred: percentile 95 of [2, 4] = 2 + 0.95 * 2 = 3.9 mm.
    assert hd95(pred, ref, spacing) == pytest.approx(3.9)
    assert hd95(ref, pred, spacing) == pytest.approx(3.9)


def test_hd95_of_shifted_slab_uses_surface_voxels() -> None:
    ref = np.zeros(SHAPE, dtype=bool)
    ref[2:9, 2:8, 2:4] = True
    pred = np.roll(ref, 3, axis=2)  # z-layers 2,3 moved to 5,6: no overlap
    # Every voxel of a 2-layer slab is on its surface. From either slab half of the voxels are 2 layers from
    # the other slab and half 3 layers, so the 95th percentile is 3 layers = 3 * 1.5 mm in both directions.
    assert hd95(pred, ref, (1.0, 1.0, 1.5)) == pytest.approx(4.5)


def test_empty_conventions() -> None:
    empty = np.zeros(SHAPE, dtype=bool)
    full = _mask((3, 3, 3))
    spacing = (1.0, 1.0, 1.0)
    assert dice(empty, empty) == 1.0
    assert hd95(empty, empty, spacing) == 0.0
    assert dice(full, empty) == 0.0 and dice(empty, full) == 0.0
    assert hd95(full, empty, spacing) == HD95_ONE_EMPTY == 373.13
    assert hd95(empty, full, spacing) == HD95_ONE_EMPTY
    assert sensitivity(empty, empty) == 1.0
    assert sensitivity(full, empty) == 0.0
    assert sensitivity(empty, full) == 0.0
    assert specificity(empty, empty) == 1.0
    everything = np.ones(SHAPE, dtype=bool)
    assert specificity(empty, everything) == 1.0


def test_hd95_shape_mismatch_raises() -> None:
    with pytest.raises(BratsError, match="shape"):
        hd95(np.ones((4, 4, 4), bool), np.ones((4, 4, 5), bool), (1, 1, 1))


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agrees_with_monai_on_random_blobs(seed: int) -> None:
    spacing = (1.0, 0.8, 2.5)
    pred, ref = _blob(seed), _blob(seed + 100)
    if seed == 3:  # a blob touching the array border, where the crop must not change the surface
        pred[:, :, -3:] = True
    assert pred.any() and ref.any()
    pred_t = torch.from_numpy(pred)[None, None]
    ref_t = torch.from_numpy(ref)[None, None]
    expected_dice = compute_dice(pred_t, ref_t, include_background=True).item()
    expected_hd95 = compute_hausdorff_distance(
        pred_t, ref_t, include_background=True, percentile=95, spacing=spacing
    ).item()
    assert dice(pred, ref) == pytest.approx(expected_dice, rel=1e-6)
    assert hd95(pred, ref, spacing) == pytest.approx(expected_hd95, rel=1e-6)
    assert hd95(pred, ref, spacing) > 0


def _labels() -> np.ndarray:
    labels = np.zeros((20, 20, 12), dtype=np.uint8)
    labels[4:14, 4:14, 2:9] = 2
    labels[6:12, 6:12, 3:8] = 1
    labels[8:10, 8:10, 4:6] = 4
    return labels


def test_region_metrics_perfect_and_missing_et() -> None:
    ref = _labels()
    perfect = region_metrics(ref, ref, (1.0, 1.0, 2.0))
    assert set(perfect) == {"WT", "TC", "ET"}
    for values in perfect.values():
        assert values == {"dice": 1.0, "hd95": 0.0, "sensitivity": 1.0, "specificity": 1.0}
    no_et = ref.copy()
    no_et[no_et == 4] = 1  # ET relabelled as necrosis: WT and TC unchanged, ET missed entirely
    scores = region_metrics(no_et, ref, (1.0, 1.0, 2.0))
    assert scores["WT"]["dice"] == 1.0 and scores["TC"]["dice"] == 1.0
    assert scores["ET"]["dice"] == 0.0
    assert scores["ET"]["hd95"] == HD95_ONE_EMPTY
    assert scores["ET"]["sensitivity"] == 0.0


def test_region_metrics_regions_are_nested_label_sets() -> None:
    ref = _labels()
    pred = ref.copy()
    pred[pred == 2] = 0  # edema dropped: WT loses voxels, TC and ET are untouched
    scores = region_metrics(pred, ref, (1.0, 1.0, 1.0))
    wt_ref, wt_pred = int(np.count_nonzero(ref)), int(np.count_nonzero(pred))
    assert scores["WT"]["dice"] == pytest.approx(2 * wt_pred / (wt_pred + wt_ref))
    assert scores["TC"]["dice"] == 1.0 and scores["ET"]["dice"] == 1.0


def test_region_metrics_shape_mismatch_raises() -> None:
    with pytest.raises(BratsError, match="shape"):
        region_metrics(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.uint8), (1, 1, 1))


def test_legacy_score_hand_computed() -> None:
    ref = np.zeros((128, 128, 2), dtype=np.uint8)  # 128x128 slices: the resize is the identity
    ref[10:12, 10:12, 0] = 2  # 4 tumour voxels in slice 0, slice 1 empty
    pred = np.zeros_like(ref)
    pred[10:12, 10, 0] = 4  # 2 of them found
    wt_dice = 2 * 2 / (2 + 4)
    background_dice = 2 * (128 * 128 - 4) / ((128 * 128 - 2) + (128 * 128 - 4))
    expected = ((wt_dice + background_dice) / 2 + 1.0) / 2
    assert legacy_slice_score(pred, ref) == pytest.approx(expected)
    assert legacy_slice_score(ref, ref) == 1.0


def test_legacy_score_rewards_an_empty_prediction() -> None:
    """Why the legacy number is not comparable: predicting nothing scores high while every Dice is 0."""
    ref = np.zeros((240, 240, 40), dtype=np.uint8)
    ref[100:130, 100:130, 15:25] = 2
    ref[110:120, 110:120, 18:22] = 4
    empty = np.zeros_like(ref)
    assert legacy_slice_score(empty, ref) > 0.85
    scores = region_metrics(empty, ref, (1.0, 1.0, 1.0))
    assert all(scores[region]["dice"] == 0.0 for region in ("WT", "TC", "ET"))
    assert math.isclose(scores["WT"]["hd95"], HD95_ONE_EMPTY)


def test_legacy_score_rejects_mismatched_shapes() -> None:
    with pytest.raises(BratsError, match="legacy"):
        legacy_slice_score(np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8, 3), np.uint8))

"""Preprocessing: layout, normalisation, and the exact way back to the original voxel grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brats_core.cases import Case
from brats_core.config import LABELS, PreprocessConfig
from brats_core.errors import BratsError
from brats_core.labels import labels_to_regions
from brats_core.preprocessing import Geometry, brain_mask, preprocess
from brats_core.synth import make_synthetic_case

NATIVE = PreprocessConfig(size=None)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _region_dice(pred: np.ndarray, ref: np.ndarray) -> list[float]:
    return [_dice(p, r) for p, r in zip(labels_to_regions(pred), labels_to_regions(ref), strict=True)]


@pytest.fixture(scope="module")
def case() -> Case:
    return make_synthetic_case("pp", shape=(40, 28, 16), seed=5)  # non-square in-plane crop


def test_layout_and_dtypes(case: Case) -> None:
    out = preprocess(case, PreprocessConfig(size=32))
    x0, x1, y0, y1, z0, z1 = out.geometry.bbox
    depth = z1 - z0
    assert out.images.shape == (depth, 4, 32, 32) and out.images.dtype == np.float32
    assert out.labels.shape == (depth, 32, 32) and out.labels.dtype == np.uint8
    assert out.brain.shape == (depth, 32, 32) and out.brain.dtype == bool
    assert set(np.unique(out.labels)) <= set(LABELS) and (out.labels > 0).any()
    brain = brain_mask(case.images)
    assert brain[x0:x1, y0:y1, z0:z1].sum() == brain.sum()  # the crop keeps the whole brain
    assert out.geometry.side == max(x1 - x0, y1 - y0) and out.geometry.shape == case.shape


def test_brain_mask_is_nonzero_in_any_modality() -> None:
    images = np.zeros((4, 3, 3, 3), dtype=np.float32)
    images[2, 1, 1, 1] = -0.5
    images[0, 0, 0, 0] = 7
    mask = brain_mask(images)
    assert mask.dtype == bool and mask.sum() == 2 and mask[1, 1, 1] and mask[0, 0, 0]


def test_native_size_round_trip_is_exact(case: Case) -> None:
    out = preprocess(case, NATIVE)
    assert out.geometry.size == out.geometry.side
    np.testing.assert_array_equal(out.geometry.restore_labels(out.labels), case.seg)


def test_upsampled_round_trip_is_exact(case: Case) -> None:
    out = preprocess(case, PreprocessConfig(size=64))
    assert out.geometry.side < 64
    np.testing.assert_array_equal(out.geometry.restore_labels(out.labels), case.seg)


def test_round_trip_exact_with_brain_touching_border_and_oblique_affine() -> None:
    angle = np.deg2rad(20)
    affine = np.array(
        [
            [0.9 * np.cos(angle), -np.sin(angle), 0, 10],
            [0.9 * np.sin(angle), np.cos(angle), 0, -4],
            [0, 0, 2.5, 3],
        ]
        + [[0, 0, 0, 1]]
    )
    case = make_synthetic_case("edge", shape=(30, 22, 12), affine=affine, seed=6)
    case.images[:, :, :, :] += 1.0  # non-zero everywhere: the brain touches every border
    case.seg[0, :, 0] = 2
    case.seg[-1, -1, -1] = 4
    out = preprocess(case, NATIVE)
    assert out.geometry.bbox == (0, 30, 0, 22, 0, 12)
    np.testing.assert_array_equal(out.geometry.restore_labels(out.labels), case.seg)
    np.testing.assert_allclose(np.asarray(out.geometry.affine), affine)
    assert out.geometry.spacing == pytest.approx((0.9, 1.0, 2.5))


def test_resized_round_trip_keeps_tumour_unlike_interpolated_labels() -> None:
    case = make_synthetic_case("big", shape=(192, 176, 12), seed=4)
    out = preprocess(case, PreprocessConfig(size=128))
    assert out.geometry.side > 128  # a real downsampling
    ours = _region_dice(out.geometry.restore_labels(out.labels), case.seg)
    assert min(ours) > 0.95

    # The original project's way: bilinear interpolation of label values, truncated to integers, both ways.
    x0, x1, y0, y1, z0, z1 = out.geometry.bbox
    seg = torch.from_numpy(case.seg[x0:x1, y0:y1, z0:z1].transpose(2, 0, 1)[:, None].astype(np.float32))
    small = F.interpolate(seg, size=(128, 128), mode="bilinear", align_corners=False).to(torch.uint8).float()
    back = F.interpolate(small, size=(x1 - x0, y1 - y0), mode="bilinear", align_corners=False).to(torch.uint8)
    legacy = np.zeros_like(case.seg)
    legacy[x0:x1, y0:y1, z0:z1] = back[:, 0].numpy().transpose(1, 2, 0)
    legacy_dice = _region_dice(legacy, case.seg)
    assert legacy_dice[1] < ours[1] - 0.1 and legacy_dice[2] < ours[2] - 0.1  # TC and ET suffer most


def test_zscore_inside_brain(case: Case) -> None:
    out = preprocess(case, NATIVE)
    for channel in range(4):
        inside = out.images[:, channel][out.brain]
        assert abs(inside.mean()) < 1e-3 and abs(inside.std() - 1.0) < 1e-3
        assert not out.images[:, channel][~out.brain].any()  # background exactly 0


def test_outliers_do_not_dominate(case: Case) -> None:
    spiked = Case(case.case_id, case.images.copy(), case.seg, case.affine, case.spacing, case.files)
    brain_voxels = np.argwhere(brain_mask(case.images))[:10]
    spiked.images[0][tuple(brain_voxels.T)] = 1e6
    clean = preprocess(case, NATIVE).images[:, 0]
    robust = preprocess(spiked, NATIVE).images[:, 0]
    assert robust.max() < 6  # the spikes are clipped at the 99.5th percentile
    assert np.abs(robust - clean).mean() < 0.05


def test_constant_modality_maps_to_zero(case: Case) -> None:
    flat = Case(case.case_id, case.images.copy(), case.seg, case.affine, case.spacing, case.files)
    flat.images[3][flat.images[3] != 0] = 100.0
    out = preprocess(flat, NATIVE)
    assert np.isfinite(out.images).all() and not out.images[:, 3].any()


def test_restore_scores(case: Case) -> None:
    out = preprocess(case, PreprocessConfig(size=24))
    one_hot = np.stack([out.labels == label for label in LABELS], axis=1).astype(np.float32)  # (Z', 4, S, S)
    scores = out.geometry.restore_scores(one_hot)
    assert scores.shape == (4, *case.shape) and scores.dtype == np.float32
    x0, x1, y0, y1, z0, z1 = out.geometry.bbox
    outside = np.ones(case.shape, dtype=bool)
    outside[x0:x1, y0:y1, z0:z1] = False
    assert (scores[0][outside] == 1).all() and not scores[1:, outside].any()
    predicted = np.asarray(LABELS, dtype=np.uint8)[scores.argmax(axis=0)]
    assert min(_region_dice(predicted, case.seg)) > 0.6  # 24 px is very coarse; the point is the geometry

    native = preprocess(case, NATIVE)
    one_hot = np.stack([native.labels == label for label in LABELS], axis=1).astype(np.float32)
    predicted = np.asarray(LABELS, dtype=np.uint8)[native.geometry.restore_scores(one_hot).argmax(axis=0)]
    np.testing.assert_array_equal(predicted, case.seg)


def test_to_grid_is_the_path_of_the_images(case: Case) -> None:
    native = preprocess(case, NATIVE)
    x0, x1, y0, y1, z0, z1 = native.geometry.bbox
    (pad_x, pad_y), side = native.geometry.pads, native.geometry.side
    inside = (slice(None), slice(None), slice(pad_x, pad_x + x1 - x0), slice(pad_y, pad_y + y1 - y0))
    grid = native.geometry.to_grid(case.images)  # native size: the crop, zero-padded, voxel for voxel
    assert grid.shape == (z1 - z0, 4, side, side) and grid.dtype == np.float32
    np.testing.assert_array_equal(grid[inside], case.images[:, x0:x1, y0:y1, z0:z1].transpose(3, 0, 1, 2))
    assert grid.sum() == case.images[:, x0:x1, y0:y1, z0:z1].sum(dtype=np.float32)  # zeros in the padding

    # The z-scored volume in the original grid, mapped by to_grid, is exactly preprocess's resized images.
    normalised = np.zeros(case.images.shape, dtype=np.float32)
    normalised[:, x0:x1, y0:y1, z0:z1] = native.images[inside].transpose(1, 2, 3, 0)
    for size in (24, 64):
        out = preprocess(case, PreprocessConfig(size=size))
        np.testing.assert_array_equal(out.geometry.to_grid(normalised), out.images)


def test_restore_argmax_is_the_argmax_of_restore_scores(case: Case) -> None:
    geometry = preprocess(case, PreprocessConfig(size=24)).geometry
    scores = np.random.default_rng(0).random((geometry.crop_shape[2], 4, 24, 24), dtype=np.float32)
    classes = geometry.restore_scores(scores).argmax(axis=0)
    for chunk in (1, 5, 64):
        np.testing.assert_array_equal(geometry.restore_argmax(scores, chunk=chunk), classes)
    labels = geometry.restore_argmax(torch.from_numpy(scores).half(), LABELS)
    expected = np.asarray(LABELS)[geometry.restore_scores(scores.astype(np.float16)).argmax(axis=0)]
    assert labels.dtype == np.uint8 and labels.shape == case.shape
    np.testing.assert_array_equal(labels, expected)
    inverted = geometry.restore_argmax(scores, (9, 1, 2, 4))  # outside the crop: the label of class 0
    x0, x1, y0, y1, z0, z1 = geometry.bbox
    outside = np.ones(case.shape, dtype=bool)
    outside[x0:x1, y0:y1, z0:z1] = False
    assert outside.any() and (inverted[outside] == 9).all()
    np.testing.assert_array_equal(inverted[~outside], np.asarray((9, 1, 2, 4))[classes[~outside]])


def test_restore_rejects_wrong_layout(case: Case) -> None:
    geometry = preprocess(case, PreprocessConfig(size=32)).geometry
    with pytest.raises(ValueError, match=r"labels must have layout \(Z', S, S\)"):
        geometry.restore_labels(np.zeros((3, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"scores must have layout \(Z', K, S, S\)"):
        geometry.restore_scores(np.zeros((geometry.crop_shape[2], 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"scores must have layout \(Z', K, S, S\)"):
        geometry.restore_argmax(torch.zeros(geometry.crop_shape[2] + 1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"volume must have layout \(K, X, Y, Z\) = \(K, 40, 28, 16\)"):
        geometry.to_grid(case.images[0])


def test_geometry_json_round_trip(case: Case) -> None:
    geometry = preprocess(case, PreprocessConfig(size=32)).geometry
    assert Geometry.from_dict(json.loads(json.dumps(geometry.to_dict()))) == geometry


def test_case_without_seg(case: Case) -> None:
    unlabelled = Case(case.case_id, case.images, None, case.affine, case.spacing, case.files)
    out = preprocess(unlabelled, PreprocessConfig(size=32))
    assert out.labels is None and out.images.shape[1:] == (4, 32, 32)


def test_empty_brain_raises(case: Case) -> None:
    empty = Case("blank", np.zeros_like(case.images), None, case.affine, case.spacing, case.files)
    with pytest.raises(BratsError, match=r"case 'blank'.*no brain voxel"):
        preprocess(empty)

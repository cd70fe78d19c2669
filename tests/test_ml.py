"""Per-voxel classifiers: features, sampling, tuning, learning, checkpoints, CLIs and bad inputs (synthetic cases)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import joblib
import nibabel as nib
import numpy as np
import pytest

from brats_app.cli import main as brats
from brats_app.registry import load_segmenter
from brats_core.cases import find_cases, load_case
from brats_core.config import PreprocessConfig
from brats_core.errors import BratsError, CheckpointError
from brats_core.metrics import dice
from brats_core.preprocessing import brain_mask, preprocess
from brats_core.split import make_split, save_split
from brats_core.synth import make_synthetic_case
from Machine_Learning_Model.features import FeatureConfig, volume_to_grid, voxel_features
from Machine_Learning_Model.models import (
    MODEL_NAMES,
    VoxelSegmenter,
    drop_small_components,
    majority_vote,
    scores_to_labels,
)
from Machine_Learning_Model.train import _region_dice_curves, sample_index, train

SIZE = 32  # in-plane grid of the tests (the shipped models use 96)


@pytest.fixture(scope="module")
def files(synthetic_root: Path) -> list:
    return find_cases(synthetic_root)


@pytest.fixture(scope="module")
def models(files: list) -> dict[str, VoxelSegmenter]:
    return train(list(MODEL_NAMES), files[:2], files[2:3], PreprocessConfig(size=SIZE), samples_per_case=400,
                 knn_max_samples=600, log=lambda message: None)


def test_features_are_vectorised_columns_in_name_order(files: list) -> None:
    case = load_case(files[0])
    pre = preprocess(case, PreprocessConfig(size=SIZE))
    config = FeatureConfig(scales=(1.0, 2.0, 4.0))
    index = np.flatnonzero(pre.brain)
    prior = volume_to_grid(np.zeros((3, *case.shape), np.float32), pre.geometry)
    features = voxel_features(pre, prior, index, config)
    names = config.feature_names()
    assert features.shape == (index.size, len(names)) and features.dtype == np.float32
    assert len(names) == 4 + 3 * 8 + 4 + 3 + 3 and np.isfinite(features).all()
    np.testing.assert_array_equal(features[:, names.index("flair")], pre.images[:, 3].reshape(-1)[index])
    positions = features[:, [names.index(n) for n in ("pos_z", "pos_x", "pos_y")]]
    assert positions.min() == 0.0 and positions.max() == 1.0
    assert (features[:, names.index("t2_std_s4")] >= 0).all()


def test_volume_to_grid_lines_up_with_preprocess(files: list) -> None:
    case = load_case(files[1])
    pre = preprocess(case, PreprocessConfig(size=SIZE))
    mapped = volume_to_grid(brain_mask(case.images)[None].astype(np.float32), pre.geometry)[0]
    assert mapped.shape == pre.brain.shape
    assert np.mean((mapped > 0.5) == pre.brain) > 0.97


def test_sampling_is_balanced_over_labels() -> None:
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[:5] = 2
    labels[5:6] = 4
    labels[6, :3] = 1  # only 60 voxels of label 1
    brain = np.ones_like(labels, dtype=bool)
    index = sample_index(labels, brain, 400, np.random.default_rng(0))
    counts = {int(k): int(v) for k, v in zip(*np.unique(labels.reshape(-1)[index], return_counts=True), strict=True)}
    assert counts == {0: 100, 1: 60, 2: 100, 4: 100} and len(np.unique(index)) == index.size


def test_threshold_curves_match_direct_decisions() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random((500, 4)).astype(np.float32)
    ref = rng.choice(np.array([0, 1, 2, 4], np.uint8), 500, p=[0.7, 0.1, 0.1, 0.1])
    candidates = np.array([-0.5, 0.0, 0.2])
    curves = _region_dice_curves(scores, ref, np.array([(ref > 0).sum(), np.isin(ref, (1, 4)).sum(),
                                                        (ref == 4).sum()]), candidates)
    for k, t in enumerate(candidates):
        labels = scores_to_labels(scores, t)
        expected = [dice(labels > 0, ref > 0), dice(np.isin(labels, (1, 4)), np.isin(ref, (1, 4))),
                    dice(labels == 4, ref == 4)]
        np.testing.assert_allclose(curves[:, k], expected)


def test_majority_vote_and_tie_break() -> None:
    votes = {"ridge": np.array([0, 1, 2, 4]), "tree": np.array([0, 1, 4, 2]), "knn": np.array([2, 2, 1, 2])}
    np.testing.assert_array_equal(majority_vote(votes, lead="tree"), [0, 1, 4, 2])


def test_drop_small_components() -> None:
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[2:12, 2:12, 2:12] = 2  # 1000 voxels
    labels[20:23, 20:23, 20:23] = 4  # 27 voxels
    labels[26, 26, 26] = 1  # one voxel
    np.testing.assert_array_equal(drop_small_components(labels, 0.01), np.where(labels == 1, 0, labels))
    only_largest = drop_small_components(labels, 1.0)
    assert (only_largest[2:12, 2:12, 2:12] == 2).all() and only_largest.sum() == 2000
    assert drop_small_components(labels, 0.0) is labels


def test_every_model_learns_synthetic_tumour(models: dict, files: list) -> None:
    case = load_case(files[3])  # neither trained nor tuned on
    brain = brain_mask(case.images)
    chance = (case.seg > 0).sum() / brain.sum()
    for name, segmenter in models.items():
        labels = segmenter.predict(case)
        assert labels.dtype == np.uint8 and labels.shape == case.shape
        assert set(np.unique(labels)) <= {0, 1, 2, 4} and not labels[~brain].any()
        wt = dice(labels > 0, case.seg > 0)
        assert wt > max(0.6, 5 * chance), f"{name}: WT Dice {wt:.3f}"
    info = models["ensemble"].info
    assert info["train_case_ids"] == [f.case_id for f in files[:2]] and info["val_case_ids"] == [files[2].case_id]
    assert models["ensemble"].lead in ("ridge", "tree", "knn")


def test_unsupported_options_are_refused_not_ignored(models: dict, tmp_path: Path) -> None:
    path = models["knn"].save(tmp_path / "knn.joblib")
    with pytest.raises(BratsError, match="does not support option"):
        load_segmenter("knn", checkpoint=path, tta=True)


def test_checkpoint_round_trip(models: dict, files: list, tmp_path: Path) -> None:
    case = load_case(files[3])
    for name in ("knn", "ensemble"):
        path = models[name].save(tmp_path / f"{name}.joblib")
        loaded = load_segmenter(name, checkpoint=path, device="cpu")
        assert loaded.name == name and loaded.thresholds == models[name].thresholds
        np.testing.assert_array_equal(loaded.predict(case), models[name].predict(case))


def _tampered(models: dict, tmp_path: Path, **changes: object) -> Path:
    data = models["tree"].to_dict()
    for key, value in changes.items():
        if key in data["versions"]:
            data["versions"] = {**data["versions"], key: value}
        else:
            data[key] = value
    path = tmp_path / "tampered.joblib"
    joblib.dump(data, path)
    return path


def test_mismatched_or_corrupt_checkpoints_are_refused(models: dict, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        VoxelSegmenter.load(tmp_path / "nothing.joblib")
    corrupt = tmp_path / "corrupt.joblib"
    corrupt.write_bytes(b"\x80\x04 this is not a pickle")
    with pytest.raises(CheckpointError, match="not a readable ML model checkpoint"):
        VoxelSegmenter.load(corrupt)
    with pytest.raises(CheckpointError, match="scikit-learn 0.1.0"):
        VoxelSegmenter.load(_tampered(models, tmp_path, sklearn="0.1.0"))
    with pytest.raises(CheckpointError, match="format version 99"):
        VoxelSegmenter.load(_tampered(models, tmp_path, format=99))
    with pytest.raises(CheckpointError, match="features differ"):
        VoxelSegmenter.load(_tampered(models, tmp_path, feature_names=["t1", "t2"]))
    with pytest.raises(CheckpointError, match="do not match this code's PreprocessConfig"):
        VoxelSegmenter.load(_tampered(models, tmp_path, preprocess={"size": 32, "clip_percentiles": [1, 99],
                                                                   "bias_field": True}))
    with pytest.raises(CheckpointError, match="needs fitted estimators and thresholds for tree"):
        VoxelSegmenter.load(_tampered(models, tmp_path, estimators={}))
    other = tmp_path / "other.joblib"
    joblib.dump({"weights": [1, 2, 3]}, other)
    with pytest.raises(CheckpointError, match="not an ML model checkpoint"):
        VoxelSegmenter.load(other)
    with pytest.raises(CheckpointError, match="holds model 'tree', not 'knn'"):
        load_segmenter("knn", checkpoint=models["tree"].save(tmp_path / "tree.joblib"))


def test_bad_cases_raise_clear_errors(models: dict) -> None:
    odd = make_synthetic_case("odd", shape=(40, 48, 32), seed=3)
    with pytest.raises(BratsError, match="differs from the atlas shape"):
        models["ridge"].predict(odd)
    empty = make_synthetic_case("empty", shape=(48, 48, 32), seed=3)
    empty.images[:] = 0
    with pytest.raises(BratsError, match="no brain voxel"):
        models["ridge"].predict(empty)
    with pytest.raises(BratsError, match="no validation cases"):
        train(["tree"], [], [])


def test_train_cli_and_predict_cli(synthetic_root: Path, files: list, tmp_path: Path) -> None:
    split = save_split(make_split([f.case_id for f in files], n_val=1, n_test=1, folds=2), tmp_path / "split.json")
    checkpoints, results = tmp_path / "checkpoints", tmp_path / "results"
    assert brats(["train", "ml", "--model", "tree", "--data", str(synthetic_root), "--split", str(split),
                  "--checkpoints", str(checkpoints), "--results", str(results), "--size", str(SIZE),
                  "--samples-per-case", "200"]) == 0
    summary = json.loads((results / "tree" / "summary.json").read_text())
    assert summary["n_cases"] == 1 and summary["samples_per_case"] == 200
    assert summary["checkpoint"] == "tree.joblib"
    assert summary["fit_seconds"] > 0 and not (results / "tree" / "fit.json").exists()

    source = synthetic_root / files[3].case_id
    bare = tmp_path / "inputs" / files[3].case_id
    shutil.copytree(source, bare)
    next(bare.glob("*_seg.nii.gz")).unlink()
    out = tmp_path / "pred"
    assert brats(["predict", "--model", "tree", "--checkpoint", str(checkpoints / "tree.joblib"), "--out", str(out),
                  str(tmp_path / "inputs")]) == 0
    written = nib.load(out / f"{files[3].case_id}.nii.gz")
    reference = load_case(source)
    assert written.shape == reference.shape and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-4)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 4}

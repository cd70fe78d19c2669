"""Naive mean model: atlas, leave-one-out thresholds, checkpoint round trip, CLI and bad inputs (synthetic cases)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_app.cli import main as brats
from brats_app.registry import load_segmenter
from brats_core.cases import find_cases, load_case
from brats_core.errors import BratsError, CheckpointError
from brats_core.metrics import dice
from brats_core.split import make_split, save_split
from brats_core.synth import make_synthetic_case
from Naive_Model.naive_mean_model import LEVELS, NaiveMeanSegmenter, _dice_per_level
from Naive_Model.naive_mean_model import load_segmenter as naive_loader

SHAPE = (40, 40, 24)


@pytest.fixture(scope="module")
def cases() -> list:
    return [make_synthetic_case(f"synth_{i:03d}", shape=SHAPE, seed=i) for i in range(10)]


@pytest.fixture(scope="module")
def fitted(cases: list) -> NaiveMeanSegmenter:
    return NaiveMeanSegmenter.fit(cases[:8])


def test_learns_synthetic_tumour_better_than_chance(fitted: NaiveMeanSegmenter, cases: list) -> None:
    for case in cases[8:]:
        labels = fitted.predict(case)
        assert labels.dtype == np.uint8 and labels.shape == case.shape
        assert set(np.unique(labels)) <= {0, 1, 2, 4}
        brain = np.any(case.images != 0, axis=0)
        assert not labels[~brain].any(), "prediction must stay inside the brain mask"
        wt_ref = case.seg > 0
        chance = wt_ref.sum() / brain.sum()  # Dice expected from a random mask of the right size in the brain
        assert dice(labels > 0, wt_ref) > max(3 * chance, 0.15)


def test_atlas_is_mean_of_region_masks_and_thresholds_in_range(fitted: NaiveMeanSegmenter, cases: list) -> None:
    mean_wt = np.mean([case.seg > 0 for case in cases[:8]], axis=0)
    np.testing.assert_array_equal(fitted.levels[0], np.rint(mean_wt * LEVELS).astype(np.uint8))
    assert fitted.case_ids == [case.case_id for case in cases[:8]]
    assert all(1 <= t <= LEVELS for t in fitted.thresholds)
    assert np.all((fitted.train_dice > 0) & (fitted.train_dice <= 1))


def test_dice_per_level_matches_direct_thresholding() -> None:
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, size=(20, 20, 10)).astype(np.uint8)
    ref = rng.random((20, 20, 10)) < 0.2
    brain = rng.random((20, 20, 10)) < 0.9
    curve = _dice_per_level(levels, ref, brain)
    for t in (1, 50, 128, 255):
        assert curve[t - 1] == pytest.approx(dice((levels >= t) & brain, ref))
    empty = np.zeros_like(ref)
    assert _dice_per_level(np.zeros_like(levels), empty, brain)[0] == 1.0  # nothing predicted, nothing there


def test_checkpoint_round_trip(fitted: NaiveMeanSegmenter, cases: list, tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "naive.npz")
    loaded = load_segmenter("naive", checkpoint=path, device="cpu")  # through the registry
    with pytest.raises(BratsError, match="does not support option"):
        load_segmenter("naive", checkpoint=path, tta=True)
    np.testing.assert_array_equal(loaded.levels, fitted.levels)
    np.testing.assert_array_equal(loaded.thresholds, fitted.thresholds)
    assert loaded.case_ids == fitted.case_ids
    assert loaded.metadata()["fit_seconds"] == fitted.fit_seconds > 0  # read by brats compare --use-shipped
    np.testing.assert_array_equal(loaded.predict(cases[9]), fitted.predict(cases[9]))


def test_bad_checkpoints_raise_clear_errors(fitted: NaiveMeanSegmenter, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        NaiveMeanSegmenter.load(tmp_path / "missing.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CheckpointError, match="not a readable naive model checkpoint"):
        NaiveMeanSegmenter.load(corrupt)
    foreign = tmp_path / "foreign.npz"
    np.savez_compressed(foreign, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a readable"):
        NaiveMeanSegmenter.load(foreign)
    old = tmp_path / "old.npz"
    np.savez_compressed(old, levels=fitted.levels, thresholds=fitted.thresholds, train_dice=fitted.train_dice,
                        metadata=np.array(json.dumps({**fitted.metadata(), "format": 0})))
    with pytest.raises(CheckpointError, match="format 0 does not match"):
        NaiveMeanSegmenter.load(old)
    with pytest.raises(BratsError, match="not 'unet'"):
        naive_loader("unet", checkpoint=fitted.save(tmp_path / "n.npz"))


def test_bad_cases_raise_clear_errors(fitted: NaiveMeanSegmenter, cases: list) -> None:
    other = make_synthetic_case("odd", shape=(32, 40, 24), seed=1)
    with pytest.raises(BratsError, match=r"shape \(32, 40, 24\) differs from the atlas shape"):
        fitted.predict(other)
    unlabelled = make_synthetic_case("nolabel", shape=SHAPE, seed=2)
    unlabelled.seg = None
    with pytest.raises(BratsError, match="needs a segmentation"):
        NaiveMeanSegmenter.fit([cases[0], unlabelled])
    with pytest.raises(BratsError, match="at least two"):
        NaiveMeanSegmenter.fit(cases[:1])
    with pytest.raises(BratsError, match="differs from the first training case"):
        NaiveMeanSegmenter.fit([cases[0], other])


def test_training_shows_its_progress(cases: list, capsys) -> None:
    NaiveMeanSegmenter.fit(cases, progress=True)
    assert "naive: thresholds, leave-one-out:   0%" in capsys.readouterr().err


def test_train_cli_refuses_outputs_under_a_file_before_writing_any(synthetic_root: Path, tmp_path: Path,
                                                                    capsys) -> None:
    (tmp_path / "afile").write_text("x")
    checkpoint = tmp_path / "naive.npz"
    args = ["--data", str(synthetic_root), "--checkpoint", str(checkpoint), "--png", str(tmp_path / "m.png"),
            "--results", str(tmp_path / "afile")]
    assert brats(["train", "naive", *args]) == 1
    assert f"--results {tmp_path / 'afile' / 'summary.json'}: {tmp_path / 'afile'} is a file" in capsys.readouterr().err
    assert not checkpoint.exists() and not (tmp_path / "m.png").exists()


def test_an_output_folder_that_is_a_file_is_a_one_line_error(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    assert brats(["synth", "--out", str(tmp_path / "afile"), "--n", "1", "--shape", "24", "24", "12"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("brats synth: error: ") and "a file stands where a folder is needed" in err
    assert "Traceback" not in err


def test_train_cli_and_predict_cli(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    ids = [files.case_id for files in find_cases(synthetic_root)]
    split = save_split(make_split(ids, n_val=1, n_test=1, folds=2), tmp_path / "split.json")
    checkpoint, png, results = tmp_path / "naive.npz", tmp_path / "maps.png", tmp_path / "results"
    args = ["--data", str(synthetic_root), "--split", str(split), "--checkpoint", str(checkpoint), "--png", str(png),
            "--results", str(results)]
    assert brats(["train", "naive", *args]) == 0
    out, err = capsys.readouterr()
    assert "naive: atlas of 2 training cases, then one threshold per region…" in out
    assert "naive: atlas, load and count:   0%" in err and "naive: thresholds, leave-one-out:   0%" in err
    assert png.stat().st_size > 1000 and checkpoint.stat().st_size < 20e6
    summary = json.loads((results / "summary.json").read_text())
    assert summary["n_cases"] == 1
    assert summary["train_case_ids"] == sorted(json.loads(split.read_text())["train"])
    assert summary["fit_seconds"] == NaiveMeanSegmenter.load(checkpoint).fit_seconds > 0
    assert summary["checkpoint"] == "naive.npz" and summary["checkpoint_bytes"] == checkpoint.stat().st_size
    assert not (results / "fit.json").exists()

    # A case without a seg predicts fine; output keeps the input's shape and affine.
    source = synthetic_root / ids[0]
    bare = tmp_path / "inputs" / ids[0]
    shutil.copytree(source, bare)
    next(bare.glob("*_seg.nii.gz")).unlink()
    out = tmp_path / "pred"
    assert brats(["predict", "--model", "naive", "--checkpoint", str(checkpoint), "--out", str(out),
                  str(tmp_path / "inputs")]) == 0
    written = nib.load(out / f"{ids[0]}.nii.gz")
    reference = load_case(source)
    assert written.shape == reference.shape and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-4)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 4}

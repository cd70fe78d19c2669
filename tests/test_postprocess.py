"""Post-processing of label maps and its tuning on out-of-fold cases, on synthetic masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brats_core.config import REGIONS
from brats_core.errors import BratsError
from brats_core.evaluation import evaluate_case
from brats_core.postprocess import (
    PostprocessConfig,
    apply_postprocess,
    remove_small_components,
    small_et_to_core,
    tune_postprocess,
)

SPACING = (1.0, 1.0, 2.0)  # 2 mm³ per voxel


def _tumour(shape=(40, 40, 20)) -> np.ndarray:
    """A reference tumour: edema block with a core and an enhancing rim inside."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[10:30, 10:30, 5:15] = 2
    labels[14:26, 14:26, 7:13] = 1
    labels[16:24, 16:24, 8:12] = 4
    return labels


def test_small_components_are_removed_and_large_ones_kept():
    labels = _tumour()
    labels[2:4, 2:4, 1:2] = 2  # 4 voxels = 8 mm³, apart from the tumour
    labels[35, 35, 18] = 4  # 1 voxel = 2 mm³
    labels[29, 29, 14] = 2  # touches the tumour diagonally (26-connectivity): part of it
    out = remove_small_components(labels, SPACING, min_mm3=10)
    assert out.dtype == labels.dtype
    assert not out[2:4, 2:4, 1].any() and out[35, 35, 18] == 0
    assert out[29, 29, 14] == 2
    np.testing.assert_array_equal(out[10:30, 10:30, 5:15], labels[10:30, 10:30, 5:15])
    assert remove_small_components(labels, SPACING, min_mm3=8)[2, 2, 1] == 2  # 8 mm³ is not below 8
    assert remove_small_components(labels, SPACING, 0) is labels


def test_small_et_becomes_core():
    labels = _tumour()
    et_mm3 = np.count_nonzero(labels == 4) * 2.0  # 256 voxels -> 512 mm³
    converted = small_et_to_core(labels, SPACING, min_mm3=et_mm3 + 1)
    assert not (converted == 4).any()
    np.testing.assert_array_equal(converted > 0, labels > 0)  # WT unchanged
    np.testing.assert_array_equal(np.isin(converted, (1, 4)), np.isin(labels, (1, 4)))  # TC unchanged
    assert small_et_to_core(labels, SPACING, min_mm3=et_mm3) is labels


def test_only_the_largest_component_is_kept_when_asked():
    labels = _tumour()
    labels[1:6, 1:6, 1:6] = 2  # a 250 mm³ false component, far larger than any small-component volume
    labels[34:36, 34:36, 17:19] = 4
    out = remove_small_components(labels, SPACING, 0, keep_largest=True)
    assert out.dtype == labels.dtype
    assert not out[1:6, 1:6, 1:6].any() and not out[34:36, 34:36, 17:19].any()
    np.testing.assert_array_equal(out[10:30, 10:30, 5:15], labels[10:30, 10:30, 5:15])
    twins = np.zeros((20, 20, 4), np.uint8)
    twins[1:4, 1:4, 1:3] = twins[10:13, 10:13, 1:3] = 1  # two components of equal volume both stay
    np.testing.assert_array_equal(remove_small_components(twins, SPACING, 0, keep_largest=True), twins)
    gone = remove_small_components(labels, SPACING, 1e6, keep_largest=True)  # the largest is small too
    assert not gone.any()
    config = PostprocessConfig(keep_largest_component=True)
    np.testing.assert_array_equal(apply_postprocess(labels, SPACING, config), out)
    assert remove_small_components(np.zeros_like(labels), SPACING, 0, keep_largest=True).sum() == 0


def test_tuner_keeps_the_largest_component_when_a_large_false_blob_beats_the_volume_grid():
    """A false component larger than every volume of the grid (as a CV case with a far false positive of
    thousands of mm³): only keep-largest removes it, so the tuner chooses it, and the report says so."""
    ref = _tumour()
    pred = ref.copy()
    pred[1:6, 1:6, 1:6] = 2  # 125 voxels = 250 mm³
    config, report = tune_postprocess([(pred, ref, SPACING)], component_grid=(0, 100), et_grid=(0,))
    assert config.keep_largest_component and config.min_component_mm3 == 0
    assert report["mean_dice_best"] == pytest.approx(1.0) and report["mean_dice_without"] < 0.999
    config, _ = tune_postprocess([(pred, ref, SPACING)], component_grid=(0, 100), et_grid=(0,), largest_grid=(False,))
    assert not config.keep_largest_component


def test_apply_postprocess_with_the_defaults_changes_nothing():
    labels = _tumour()
    assert apply_postprocess(labels, SPACING, PostprocessConfig()) is labels
    both = apply_postprocess(labels, SPACING, PostprocessConfig(min_component_mm3=10, et_min_mm3=1e6))
    assert not (both == 4).any() and both.any()


def test_tuner_picks_the_volumes_that_help_out_of_fold():
    """Cases with spurious specks and with false ET where the reference has none: the tuner removes both."""
    cases = []
    rng = np.random.default_rng(0)
    for n in range(6):
        ref = _tumour()
        if n % 2:  # no ET in the reference, a few false ET voxels in the prediction
            ref = np.where(ref == 4, 1, ref).astype(np.uint8)
        pred = ref.copy()
        if n % 2:
            pred[18:20, 18:20, 9] = 4
        for _ in range(5):  # single-voxel false positives far from the tumour
            x, y, z = rng.integers(32, 40), rng.integers(0, 8), rng.integers(0, 20)
            pred[x, y, z] = 2
        cases.append((pred, ref, SPACING))
    config, report = tune_postprocess(cases, component_grid=(0, 10, 100000), et_grid=(0, 20, 100000))
    assert config.min_component_mm3 == 10  # 100000 would delete the tumour itself
    assert config.et_min_mm3 == 20  # removes 8 mm³ of false ET, keeps the 512 mm³ true ET
    assert report["mean_dice_best"] > report["mean_dice_without"]
    assert report["mean_dice_best"] == pytest.approx(1.0)
    assert not config.keep_largest_component  # a tie with the component filter: the least change wins
    assert np.asarray(report["mean_dice"]).shape == (2, 3, 3) and report["cases"] == 6


def test_tuner_scores_are_the_harness_dice_of_the_postprocessed_labels():
    """Every grid cell of the tuning report is the mean WT/TC/ET Dice that brats_core.evaluation gives the
    labels apply_postprocess makes with that cell's volumes (the tuner's fast path scores the same thing)."""
    rng = np.random.default_rng(1)
    cases = []
    for _ in range(3):
        ref = _tumour()
        pred = np.where(rng.random(ref.shape) < 0.05, rng.choice(np.array([0, 1, 2, 4], np.uint8), ref.shape), ref)
        cases.append((pred.astype(np.uint8), ref, SPACING))
    grid_c, grid_e = (0, 4, 40), (0, 100, 5000)
    _, report = tune_postprocess(cases, component_grid=grid_c, et_grid=grid_e)
    assert report["keep_largest_grid"] == [False, True]
    for n, largest in enumerate((False, True)):
        for i, c in enumerate(grid_c):
            for j, e in enumerate(grid_e):
                config = PostprocessConfig(min_component_mm3=c, et_min_mm3=e, keep_largest_component=largest)
                rows = [evaluate_case(apply_postprocess(p, s, config), r, s) for p, r, s in cases]
                expected = np.mean([np.mean([row[f"{k}_dice"] for k in REGIONS]) for row in rows])
                assert report["mean_dice"][n][i][j] == pytest.approx(expected)


def test_tuner_prefers_no_change_on_ties_and_refuses_bad_input():
    ref = _tumour()
    config, report = tune_postprocess([(ref, ref, SPACING)])
    assert (config.min_component_mm3, config.et_min_mm3) == (0.0, 0.0)
    assert report["mean_dice_best"] == report["mean_dice_without"] == 1.0
    with pytest.raises(BratsError, match="at least one"):
        tune_postprocess([])
    with pytest.raises(BratsError, match="case 0: prediction shape"):
        tune_postprocess([(ref[:-1], ref, SPACING)])


def test_nested_tuning_chooses_each_folds_setting_from_the_other_folds_only():
    """Fold 1's predictions carry a false 40 mm³ blob, fold 2's are perfect: tuned on all cases the blob filter
    wins and scores 1.0, but fold 1 tuned on fold 2 alone has no reason to filter, so the nested mean (each
    case under its own fold's choice, as the harness scores it) is lower: the honest figure."""
    ref = _tumour()
    blob = ref.copy()
    blob[1:3, 1:3, 15:20] = 2  # 20 voxels = 40 mm³, away from the tumour
    cases = [(blob, ref, SPACING), (blob, ref, SPACING), (ref, ref, SPACING), (ref, ref, SPACING)]
    folds = [1, 1, 2, 2]
    config, report = tune_postprocess(cases, component_grid=(0, 50), et_grid=(0,), folds=folds)
    assert config.min_component_mm3 == 50 and report["mean_dice_best"] == pytest.approx(1.0)
    nested = report["nested"]
    assert nested["chosen"]["1"]["min_component_mm3"] == 0  # fold 2 alone: a tie, so no change
    assert nested["chosen"]["2"]["min_component_mm3"] == 50
    for fold in (1, 2):  # each fold's choice is what tuning on the other fold's cases alone gives
        others = [c for c, f in zip(cases, folds, strict=True) if f != fold]
        assert nested["chosen"][str(fold)] == tune_postprocess(others, component_grid=(0, 50), et_grid=(0,))[0].to_dict()
    rows = [evaluate_case(apply_postprocess(p, s, PostprocessConfig.from_dict(nested["chosen"][str(f)])), r, s)
            for (p, r, s), f in zip(cases, folds, strict=True)]
    expected = np.mean([np.mean([row[f"{k}_dice"] for k in REGIONS]) for row in rows])
    assert nested["mean_dice"] == pytest.approx(expected) and nested["mean_dice"] < report["mean_dice_best"]
    assert "nested" not in tune_postprocess(cases, component_grid=(0, 50), et_grid=(0,))[1]
    with pytest.raises(BratsError, match="3 fold numbers for 4 cases"):
        tune_postprocess(cases, folds=[1, 1, 2])
    with pytest.raises(BratsError, match="at least two folds"):
        tune_postprocess(cases, folds=[1, 1, 1, 1])


@pytest.mark.parametrize(("data", "message"), [
    ({"thresholds": [0.5, 0.5]}, "thresholds"), ({"thresholds": [0.5, 1.0, 0.5]}, "thresholds"),
    ({"min_component_mm3": -1}, ">= 0"), ({"et_volume": 10}, "unknown post-processing fields"),
    ({"keep_largest_component": "yes"}, "true or false"),
])  # fmt: skip
def test_invalid_postprocess_config_raises(data, message):
    with pytest.raises(BratsError, match=message):
        PostprocessConfig.from_dict(data)
    assert PostprocessConfig.from_dict(PostprocessConfig(et_min_mm3=5).to_dict()) == PostprocessConfig(et_min_mm3=5)
    old = {"thresholds": [0.5, 0.5, 0.5], "min_component_mm3": 4000.0, "et_min_mm3": 0.0}  # exports before the field
    assert PostprocessConfig.from_dict(old) == PostprocessConfig(min_component_mm3=4000)


def test_tuning_cli_on_out_of_fold_predictions_records_the_result(synthetic_root, tmp_path, capsys):
    """Two folds of a compare-like folder (random tiny exports): OOF predictions, report, record in an export."""
    from brats_core.split import save_split
    from Deep_Learning_Model.export import load_export, write_random_export
    from Deep_Learning_Model.model import ModelConfig
    from Deep_Learning_Model.tune_postprocess import main

    ids = sorted(p.name for p in synthetic_root.iterdir())
    config = ModelConfig(arch="unet", base_width=4, input_size=32, head="regions")
    for k, test in enumerate((ids[:2], ids[2:]), start=1):
        fold = tmp_path / "compare" / f"fold_{k}"
        rest = sorted(set(ids) - set(test))
        save_split({"seed": 0, "train": rest, "val": [], "test": test, "folds": [ids[:2], ids[2:]]},
                   fold / "split.json")
        write_random_export(fold / "unet" / "run" / "export.pt", config, seed=k)
    final = write_random_export(tmp_path / "final.pt", config)
    args = ["--data", str(synthetic_root), "--compare-dir", str(tmp_path / "compare"), "--model", "unet",
            "--record", str(final), "--out", str(tmp_path / "report.json"), "--device", "cpu"]
    assert main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["cases"] == len(ids) and report["mean_dice_best"] >= report["mean_dice_without"]
    assert load_export(final)[3]["postprocess"] == report["chosen"]
    assert "out-of-fold cases" in capsys.readouterr().out
    assert main(["--data", str(synthetic_root), "--compare-dir", str(tmp_path / "nothing")]) == 1
    assert "no fold_<k>/split.json" in capsys.readouterr().err
    same = ["--fold", str(tmp_path / "compare/fold_1/split.json"), str(tmp_path / "compare/fold_1/unet/run/export.pt")]
    assert main(["--data", str(synthetic_root), *same, *same]) == 1
    assert "already test cases of another fold" in capsys.readouterr().err

"""Evaluation harness: report rows, report files and numbers, prediction checks, folder evaluation errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_core.cases import Case, find_cases, load_case
from brats_core.config import HD95_ONE_EMPTY
from brats_core.errors import BratsError
from brats_core.evaluation import (
    SCORE_COLUMNS,
    evaluate_case,
    evaluate_folders,
    evaluate_segmenter,
    write_reports,
)
from brats_core.nifti import save_labels
from brats_core.synth import make_synthetic_case, write_case

SHAPE = (48, 48, 32)


@pytest.fixture
def cases_dir(synthetic_root: Path) -> Path:
    """Four synthetic cases synth_000 .. synth_003 (read-only)."""
    return synthetic_root


class Oracle:
    """Returns the reference (or a transform of it) as its prediction."""

    name = "oracle"

    def __init__(self, transform=lambda seg: seg) -> None:
        self.transform = transform

    def predict(self, case: Case) -> np.ndarray:
        return self.transform(case.seg)


def test_evaluate_case_row_from_case_and_from_arrays() -> None:
    case = make_synthetic_case("c1", shape=SHAPE, seed=3, spacing=(1.0, 1.0, 2.0))
    row = evaluate_case(case.seg, case)
    assert list(row) == ["case_id", *SCORE_COLUMNS]
    assert row["case_id"] == "c1"
    assert row["WT_dice"] == row["TC_dice"] == row["ET_dice"] == 1.0 and row["legacy"] == 1.0
    empty = np.zeros_like(case.seg)
    same = evaluate_case(empty, case.seg, spacing=case.spacing, case_id="c1")
    assert same == evaluate_case(empty, case)
    assert same["WT_dice"] == 0.0 and same["WT_hd95"] == HD95_ONE_EMPTY
    with pytest.raises(ValueError, match="spacing"):
        evaluate_case(empty, case.seg)
    case.seg = None
    with pytest.raises(BratsError, match="no segmentation"):
        evaluate_case(empty, case)


def _row(case_id: str, wt_dice: float, hd: float, **extra: float) -> dict:
    row = {column: 1.0 for column in SCORE_COLUMNS}
    row.update(case_id=case_id, WT_dice=wt_dice, WT_hd95=hd, ET_hd95=hd, legacy=0.9, **extra)
    return row


def test_write_reports_numbers_and_files(tmp_path: Path) -> None:
    rows = [_row("a", 0.6, 2.0), _row("b", 0.8, 4.0), _row("c", 1.0, 12.0)]
    summary = write_reports(rows, tmp_path, title="demo")
    assert summary["n_cases"] == 3 and summary["title"] == "demo"
    assert summary["WT"]["dice"] == pytest.approx({"mean": 0.8, "sd": 0.2, "median": 0.8})
    assert summary["WT"]["hd95"] == pytest.approx(
        {"mean": 6.0, "sd": np.std([2, 4, 12], ddof=1), "median": 4.0}
    )
    assert summary["TC"]["dice"] == {"mean": 1.0, "sd": 0.0, "median": 1.0}
    assert summary["legacy"]["mean"] == pytest.approx(0.9)
    assert "predict_seconds_mean" not in summary
    assert json.loads((tmp_path / "summary.json").read_text()) == summary

    with open(tmp_path / "per_case.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["case_id"] for r in table] == ["a", "b", "c"]
    assert list(table[0]) == ["case_id", *SCORE_COLUMNS]
    assert float(table[2]["WT_hd95"]) == 12.0

    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.startswith("# demo")
    assert "| WT | 0.800 ± 0.200 | 6.00 ± 5.29 |" in markdown
    assert "| TC | 1.000 ± 0.000 | 1.00 ± 0.00 |" in markdown
    assert "Legacy slice score" in markdown and "not comparable" in markdown


def test_write_reports_timed_single_case_and_empty(tmp_path: Path) -> None:
    summary = write_reports([_row("a", 0.5, 3.0, predict_seconds=1.5)], tmp_path / "one")
    assert summary["WT"]["dice"] == {"mean": 0.5, "sd": 0.0, "median": 0.5}
    assert summary["predict_seconds_mean"] == 1.5
    assert "predict_seconds" in (tmp_path / "one" / "per_case.csv").read_text().splitlines()[0]
    assert "1.50 s per case" in (tmp_path / "one" / "summary.md").read_text()
    with pytest.raises(BratsError, match="no cases"):
        write_reports([], tmp_path / "none")


def test_write_reports_merges_extra(tmp_path: Path) -> None:
    extra = {"fit_seconds": 12.5, "checkpoint": "naive.npz"}
    summary = write_reports([_row("a", 0.5, 3.0, predict_seconds=1.5)], tmp_path / "one", extra=extra)
    assert summary["fit_seconds"] == 12.5 and summary["checkpoint"] == "naive.npz" and summary["n_cases"] == 1
    assert list(summary)[-2:] == ["fit_seconds", "checkpoint"]  # after the scores
    assert json.loads((tmp_path / "one" / "summary.json").read_text()) == summary
    with pytest.raises(ValueError, match=r"extra keys \['WT', 'predict_seconds_mean'\] would replace"):
        write_reports([_row("a", 0.5, 3.0, predict_seconds=1.5)], tmp_path / "two",
                      extra={"WT": 1, "predict_seconds_mean": 0, "ok": 1})
    assert not (tmp_path / "two").exists()  # nothing written


def test_evaluate_segmenter_perfect_writes_predictions(cases_dir: Path, tmp_path: Path) -> None:
    cases = find_cases(cases_dir)
    summary = evaluate_segmenter(
        Oracle(), cases, tmp_path / "out", predictions_dir=tmp_path / "pred", progress=False,
        extra={"fit_seconds": 0.0},
    )
    assert summary["n_cases"] == 4 and summary["predict_seconds_mean"] >= 0.0
    assert summary["fit_seconds"] == 0.0
    for region in ("WT", "TC", "ET"):
        assert summary[region]["dice"]["mean"] == 1.0 and summary[region]["hd95"]["mean"] == 0.0
    for files in cases:
        case = load_case(files)
        written = nib.load(tmp_path / "pred" / f"{files.case_id}.nii.gz")
        assert written.get_data_dtype() == np.uint8
        np.testing.assert_allclose(written.affine, case.affine)
        np.testing.assert_array_equal(np.asarray(written.dataobj), case.seg)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"per_case.csv", "summary.json", "summary.md"}


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (lambda seg: seg[:-1], "shape"),
        (lambda seg: seg.astype(np.int64), "dtype uint8"),
        (lambda seg: np.where(seg == 4, 3, seg).astype(np.uint8), "labels outside"),
        (lambda seg: seg.tolist(), "numpy array"),
    ],
)
def test_evaluate_segmenter_rejects_bad_predictions(
    cases_dir: Path, tmp_path: Path, transform, message: str
) -> None:
    with pytest.raises(BratsError, match=message) as info:
        evaluate_segmenter(Oracle(transform), find_cases(cases_dir)[:1], tmp_path, progress=False)
    assert "synth_000" in str(info.value)


def test_evaluate_segmenter_case_without_seg_raises(cases_dir: Path, tmp_path: Path) -> None:
    files = find_cases(cases_dir)[0]
    no_seg = type(files)(case_id=files.case_id, images=files.images, seg=None)
    with pytest.raises(BratsError, match="no segmentation"):
        evaluate_segmenter(Oracle(), [no_seg], tmp_path, progress=False)


def test_save_labels_round_trip(tmp_path: Path) -> None:
    labels = np.zeros((6, 5, 4), dtype=np.uint8)
    labels[1:3, 1:3, 1] = 4
    affine = np.diag([1.5, 1.0, 3.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    path = save_labels(labels, affine, tmp_path / "deep" / "x.nii.gz")
    image = nib.load(path)
    assert image.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.affine, affine)
    np.testing.assert_array_equal(np.asarray(image.dataobj), labels)


def _perfect_predictions(cases_dir: Path, pred_dir: Path) -> list:
    cases = [load_case(files) for files in find_cases(cases_dir)]
    for case in cases:
        save_labels(case.seg, case.affine, pred_dir / f"{case.case_id}.nii.gz")
    return cases


def test_evaluate_folders_rejects_wrong_affine(cases_dir: Path, tmp_path: Path) -> None:
    case = _perfect_predictions(cases_dir, tmp_path / "pred")[0]
    moved = case.affine.copy()
    moved[0, 3] += 2.0
    bad = save_labels(case.seg, moved, tmp_path / "pred" / f"{case.case_id}.nii.gz")
    with pytest.raises(BratsError, match="affine differs") as info:
        evaluate_folders(tmp_path / "pred", cases_dir, tmp_path / "out", progress=False)
    assert str(bad) in str(info.value)


def test_evaluate_folders_rejects_bad_labels(cases_dir: Path, tmp_path: Path) -> None:
    case = _perfect_predictions(cases_dir, tmp_path / "pred")[-1]
    bad = save_labels(
        np.where(case.seg == 4, 5, case.seg), case.affine, tmp_path / "pred" / f"{case.case_id}.nii.gz"
    )
    with pytest.raises(BratsError, match="labels outside") as info:
        evaluate_folders(tmp_path / "pred", cases_dir, tmp_path / "out", progress=False)
    assert str(bad) in str(info.value)


def test_evaluate_folders_reads_brats2023_labels_in_references_and_predictions(tmp_path: Path) -> None:
    """A BraTS 2023+ case marks enhancing tumour 3 in its seg; predictions for it may use 3 or 4 alike."""
    case = make_synthetic_case("BraTS-GLI-00001-000", shape=(40, 40, 24), seed=2)
    write_case(case, tmp_path / "refs", naming="brats2023")
    save_labels(np.where(case.seg == 4, 3, case.seg), case.affine, tmp_path / "p3" / f"{case.case_id}.nii.gz")
    save_labels(case.seg, case.affine, tmp_path / "p4" / f"{case.case_id}.nii.gz")
    for pred in ("p3", "p4"):
        summary = evaluate_folders(tmp_path / pred, tmp_path / "refs", tmp_path / f"out_{pred}", progress=False)
        assert [summary[r]["dice"]["mean"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
    assert (case.seg == 4).any()


def test_evaluate_folders_rejects_missing_prediction_folder(cases_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BratsError, match="prediction folder not found"):
        evaluate_folders(tmp_path / "absent", cases_dir, tmp_path / "out", progress=False)


@pytest.mark.real_data
def test_full_size_case_perfect_and_shifted(real_or_synthetic_root: Path, tmp_path: Path) -> None:
    files = find_cases(real_or_synthetic_root)[:1]
    perfect = evaluate_segmenter(Oracle(), files, tmp_path / "perfect", progress=False)
    assert perfect["WT"]["dice"]["mean"] == 1.0 and perfect["ET"]["hd95"]["mean"] == 0.0
    shifted = evaluate_segmenter(
        Oracle(lambda seg: np.roll(seg, 2, axis=0)), files, tmp_path / "shift", progress=False
    )
    # Every surface voxel moved by 2 voxels along x, so no surface distance exceeds 2 voxel widths.
    spacing_x = load_case(files[0]).spacing[0]
    assert 0.0 < shifted["WT"]["hd95"]["mean"] <= 2 * spacing_x + 1e-9
    assert 0.5 < shifted["WT"]["dice"]["mean"] < 1.0

"""The shared evaluation harness: score label maps per case in 3D and write per-case and summary reports.

Every model is scored here, the same way: each case in its original voxel space, regions WT/TC/ET, Dice and
HD95 (mm) with the BraTS conventions of :mod:`brats_core.metrics`. Reports: ``per_case.csv``,
``summary.json`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import nibabel as nib
import numpy as np
from tqdm import tqdm

from brats_core.cases import (
    Case,
    CaseFiles,
    check_labels,
    check_same_geometry,
    find_cases,
    load_case,
    read_nifti,
)
from brats_core.config import HD95_ONE_EMPTY, LABELS, REGIONS
from brats_core.errors import BratsError
from brats_core.metrics import legacy_slice_score, region_metrics

METRICS: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity")
#: Score columns of ``per_case.csv``, after ``case_id``; ``predict_seconds`` follows when predictions were timed.
SCORE_COLUMNS: tuple[str, ...] = (*(f"{r}_{m}" for r in REGIONS for m in METRICS), "legacy")


class Segmenter(Protocol):
    """What every model exposes to the harness, the CLI, the API and the UI."""

    name: str

    def predict(self, case: Case) -> np.ndarray:
        """Labels 0/1/2/4 as uint8 of shape ``case.shape``, in the case's original geometry."""
        ...


def check_prediction(labels: object, shape: Sequence[int], source: str) -> np.ndarray:
    """Return ``labels`` if it is a uint8 array of ``shape`` holding only 0/1/2/4, else raise BratsError."""
    if not isinstance(labels, np.ndarray):
        raise BratsError(f"{source}: expected a numpy array, got {type(labels).__name__}")
    if labels.dtype != np.uint8:
        raise BratsError(f"{source}: expected dtype uint8, got {labels.dtype}")
    if labels.shape != tuple(shape):
        raise BratsError(f"{source}: shape {labels.shape} differs from the case shape {tuple(shape)}")
    bad = sorted(set(np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist()) - set(LABELS))
    if bad:
        raise BratsError(f"{source}: labels outside {{0, 1, 2, 4}}: {bad}")
    return labels


def timed_predict(segmenter: Segmenter, case: Case) -> tuple[np.ndarray, float]:
    """``segmenter.predict(case)``, checked with :func:`check_prediction`, and its wall time in seconds."""
    start = time.perf_counter()
    labels = segmenter.predict(case)
    seconds = time.perf_counter() - start
    check_prediction(labels, case.shape, f"{segmenter.name} prediction for case '{case.case_id}'")
    return labels, seconds


def save_labels(labels: np.ndarray, affine: np.ndarray, path: Path | str) -> Path:
    """Write a label map as a uint8 NIfTI with ``affine`` (qform and sform), creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), np.asarray(affine, dtype=np.float64))
    image.set_data_dtype(np.uint8)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
    return path


def evaluate_case(
    pred_labels: np.ndarray,
    case_or_ref: Case | np.ndarray,
    spacing: Sequence[float] | None = None,
    case_id: str | None = None,
) -> dict:
    """One flat report row: ``case_id``, ``<region>_<metric>`` for WT/TC/ET and the ``legacy`` score.

    ``case_or_ref`` is a loaded :class:`Case` (its seg, spacing and id are used unless given) or a reference
    label map, which then needs ``spacing``.
    """
    if isinstance(case_or_ref, Case):
        if case_or_ref.seg is None:
            raise BratsError(f"case '{case_or_ref.case_id}' has no segmentation; it cannot be evaluated")
        ref = case_or_ref.seg
        spacing = case_or_ref.spacing if spacing is None else spacing
        case_id = case_or_ref.case_id if case_id is None else case_id
    else:
        ref = np.asarray(case_or_ref)
        if spacing is None:
            raise ValueError("spacing is required when the reference is an array")
    row: dict = {"case_id": case_id or ""}
    for region, values in region_metrics(pred_labels, ref, spacing).items():
        row.update({f"{region}_{metric}": value for metric, value in values.items()})
    row["legacy"] = legacy_slice_score(pred_labels, ref)
    return row


def evaluate_segmenter(
    segmenter: Segmenter,
    cases: list[CaseFiles],
    out_dir: Path | str,
    predictions_dir: Path | str | None = None,
    progress: bool = True,
    extra: dict | None = None,
) -> dict:
    """Predict, check, optionally save and score every case; write the reports and return the summary.

    ``predict`` is timed per case (``predict_seconds``). A case without a segmentation raises BratsError.
    ``extra`` (e.g. the model's ``fit_seconds`` and artifact) goes into the summary (:func:`write_reports`).
    """
    rows = []
    for files in tqdm(cases, desc=f"evaluate {segmenter.name}", unit="case", disable=not progress):
        if files.seg is None:
            raise BratsError(f"case '{files.case_id}' has no segmentation file; it cannot be evaluated")
        case = load_case(files)
        labels, seconds = timed_predict(segmenter, case)
        if predictions_dir is not None:
            save_labels(labels, case.affine, Path(predictions_dir) / f"{case.case_id}.nii.gz")
        rows.append({**evaluate_case(labels, case), "predict_seconds": seconds})
    return write_reports(rows, out_dir, title=f"{segmenter.name}: {len(rows)} cases", extra=extra)


def evaluate_folders(pred_dir: Path | str, ref_dir: Path | str, out_dir: Path | str, progress: bool = True) -> dict:
    """Score ``<pred_dir>/<case_id>.nii.gz`` against the seg of every case found in ``ref_dir``.

    A missing prediction, or one whose shape, affine or labels do not match its reference, raises BratsError
    naming the file.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise BratsError(f"{pred_dir}: prediction folder not found")
    rows = []
    for files in tqdm(find_cases(ref_dir), desc="evaluate", unit="case", disable=not progress):
        path = pred_dir / f"{files.case_id}.nii.gz"
        if not path.is_file():
            raise BratsError(f"{path}: missing prediction for case '{files.case_id}'")
        if files.seg is None:
            raise BratsError(f"case '{files.case_id}' in {ref_dir} has no segmentation; it cannot be evaluated")
        ref, ref_affine, spacing = read_nifti(Path(files.seg))
        pred, pred_affine, _ = read_nifti(path)
        check_same_geometry(
            str(path), pred.shape, pred_affine, f"the reference {files.seg}", ref.shape, ref_affine
        )
        rows.append(
            evaluate_case(
                check_labels(pred, str(path)), check_labels(ref, str(files.seg)), spacing, files.case_id
            )
        )
    return write_reports(rows, out_dir, title=f"{pred_dir}: {len(rows)} cases")


def _stats(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value) and median, with exactly rounded sums."""
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "median": float(statistics.median(values))}


def write_reports(
    rows: list[dict], out_dir: Path | str, title: str = "Evaluation", extra: dict | None = None
) -> dict:
    """Write ``per_case.csv``, ``summary.json`` and ``summary.md`` under ``out_dir``; return the summary.

    The summary holds ``title``, ``n_cases``, per region and metric ``{"mean", "sd", "median"}`` (e.g.
    ``summary["WT"]["dice"]["mean"]``), the same for ``legacy``, ``predict_seconds_mean`` when timed, then the
    JSON-serialisable ``extra`` items (a record of the model, such as its ``fit_seconds`` and artifact), which
    may not replace a key of the summary's own (ValueError).
    """
    if not rows:
        raise BratsError(f"no cases to report in {out_dir}")
    timed = all("predict_seconds" in row for row in rows)
    summary: dict = {"title": title, "n_cases": len(rows)}
    for region in REGIONS:
        summary[region] = {metric: _stats([row[f"{region}_{metric}"] for row in rows]) for metric in METRICS}
    summary["legacy"] = _stats([row["legacy"] for row in rows])
    if timed:
        summary["predict_seconds_mean"] = statistics.fmean(row["predict_seconds"] for row in rows)
    clash = sorted(set(extra or {}) & set(summary))
    if clash:
        raise ValueError(f"extra keys {clash} would replace the summary's own")
    summary.update(extra or {})

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ["case_id", *SCORE_COLUMNS, *(["predict_seconds"] if timed else [])]
    with open(out_dir / "per_case.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "summary.md").write_text(_markdown(summary))
    return summary


def _markdown(summary: dict) -> str:
    lines = [
        f"# {summary['title']}",
        "",
        f"{summary['n_cases']} cases, mean ± sd over cases; 3D per case in the original voxel space. "
        f"Both masks empty: Dice 1, HD95 0; one empty: Dice 0, HD95 {HD95_ONE_EMPTY} mm.",
        "",
        "| Region | Dice | HD95 (mm) | Sensitivity | Specificity |",
        "| --- | --- | --- | --- | --- |",
    ]
    for region in REGIONS:
        cells = [
            f"{summary[region][metric]['mean']:.{digits}f} ± {summary[region][metric]['sd']:.{digits}f}"
            for metric, digits in zip(METRICS, (3, 2, 3, 4), strict=True)
        ]
        lines.append(f"| {region} | {' | '.join(cells)} |")
    legacy = summary["legacy"]
    lines += [
        "",
        f"Legacy slice score (the original project's 2D background+tumour slice average; not comparable to "
        f"Dice, an empty prediction scores high): {legacy['mean']:.4f} ± {legacy['sd']:.4f}",
    ]
    if "predict_seconds_mean" in summary:
        lines.append(f"\nPrediction time: {summary['predict_seconds_mean']:.2f} s per case (mean).")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="brats evaluate", description="Score predicted label maps <case_id>.nii.gz against references."
    )
    parser.add_argument("--pred", required=True, type=Path, help="folder of <case_id>.nii.gz predictions")
    parser.add_argument("--ref", required=True, type=Path, help="cases with segmentations (folder or .zip)")
    parser.add_argument("--out", required=True, type=Path, help="folder for per_case.csv and summary.*")
    args = parser.parse_args(argv)
    evaluate_folders(args.pred, args.ref, args.out)
    print((args.out / "summary.md").read_text(), end="")
    return 0

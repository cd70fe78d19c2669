"""The shared evaluation harness: score label maps per case in 3D and write per-case and summary reports.

Every model is scored here, the same way: each case in its original voxel space, regions WT/TC/ET, Dice and
HD95 (mm) with the BraTS conventions of :mod:`brats_core.metrics`. Reports: ``per_case.csv``,
``summary.json`` and ``summary.md``.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from brats_core.cases import Case, CaseFiles, load_case, open_cases
from brats_core.config import HD95_ONE_EMPTY, LABELS, REGIONS
from brats_core.errors import BratsError
from brats_core.metrics import legacy_slice_score, region_metrics
from brats_core.nifti import check_labels, check_same_geometry, read_nifti, save_labels
from brats_core.provenance import Provenance

METRICS: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity")
#: Score columns of ``per_case.csv``, after ``case_id``; ``predict_seconds`` follows when predictions were timed.
SCORE_COLUMNS: tuple[str, ...] = (*(f"{r}_{m}" for r in REGIONS for m in METRICS), "legacy")


class Segmenter(Protocol):
    """What every model exposes to the harness, the CLI, the API and the UI."""

    name: str
    #: Where the model came from (training cases, scores, time, hardware), read from its checkpoint.
    provenance: Provenance

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


@dataclass
class Segmentation:
    """What :func:`segment_case` did with one case."""

    case: Case
    labels: np.ndarray
    #: Wall time of ``predict`` alone.
    seconds: float
    path: Path | None
    #: The :func:`evaluate_case` row when the case has a segmentation (and scoring was asked for), else None.
    scores: dict | None


def segment_case(segmenter: Segmenter, source: CaseFiles | Case, out_path: Path | str | None = None,
                 score: bool = True) -> Segmentation:
    """The one path from a case to its label map: load, predict, check, save to ``out_path``, score.

    ``score=False`` does not read the case's segmentation; with ``score=True`` a case with a segmentation is
    scored (3D, WT/TC/ET) and one without is only predicted.
    """
    case = source if isinstance(source, Case) else load_case(source, with_seg=score)
    labels, seconds = timed_predict(segmenter, case)
    path = save_labels(labels, case.affine, out_path) if out_path is not None else None
    scores = evaluate_case(labels, case) if score and case.seg is not None else None
    return Segmentation(case, labels, seconds, path, scores)


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
    ``extra`` (e.g. the model's ``fit_seconds`` and checkpoint) goes into the summary (:func:`write_reports`).
    """
    rows = []
    for files in tqdm(cases, desc=f"evaluate {segmenter.name}", unit="case", disable=not progress):
        if files.seg is None:
            raise BratsError(f"case '{files.case_id}' has no segmentation file; it cannot be evaluated")
        out = Path(predictions_dir) / f"{files.case_id}.nii.gz" if predictions_dir is not None else None
        done = segment_case(segmenter, files, out)
        rows.append({**done.scores, "predict_seconds": done.seconds})
    return write_reports(rows, out_dir, title=f"{segmenter.name}: {len(rows)} cases", extra=extra)


class MissingPredictions(BratsError):
    """Some reference cases have no ``<case_id>.nii.gz`` in the prediction folder (``missing``: their ids)."""

    def __init__(self, pred_dir: Path, missing: list[str], n_references: int) -> None:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        others = ", and one <case_id>.nii.gz for each of the others" if len(missing) > 1 else ""
        super().__init__(
            f"{pred_dir}: missing prediction for {len(missing)} of the {n_references} reference cases ({shown}): "
            f"expected {Path(pred_dir) / f'{missing[0]}.nii.gz'}{others}"
        )
        self.missing, self.n_references = missing, n_references


def evaluate_folders(
    pred_dir: Path | str, ref_dir: Path | str, out_dir: Path | str, progress: bool = True,
    only_predicted: bool = False,
) -> dict:
    """Score ``<pred_dir>/<case_id>.nii.gz`` against the seg of every case found in ``ref_dir``.

    Strict by default: a reference without its prediction raises :class:`MissingPredictions` (before anything
    is read). With ``only_predicted`` those references are skipped; the summary lists them
    (``missing_predictions``) and says how many references there were. A prediction whose shape, affine or
    labels do not match its reference raises BratsError naming the file.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise BratsError(f"{pred_dir}: prediction folder not found")
    with open_cases(ref_dir) as references:
        missing = [f.case_id for f in references if not (pred_dir / f"{f.case_id}.nii.gz").is_file()]
        if missing and (not only_predicted or len(missing) == len(references)):
            raise MissingPredictions(pred_dir, missing, len(references))
        scored = [f for f in references if f.case_id not in missing]
        rows = [_score_file(pred_dir, files, ref_dir)
                for files in tqdm(scored, desc="evaluate", unit="case", disable=not progress)]
        n_references = len(references)
    extra = {"n_references": n_references, "missing_predictions": missing} if missing else None
    title = f"{pred_dir}: {len(rows)} cases" + (f" of {n_references} references" if missing else "")
    return write_reports(rows, out_dir, title=title, extra=extra)


def _score_file(pred_dir: Path, files: CaseFiles, ref_dir: Path | str) -> dict:
    """The report row of ``<pred_dir>/<case_id>.nii.gz`` scored against the seg of ``files``."""
    path = pred_dir / f"{files.case_id}.nii.gz"
    if not path.is_file():
        raise BratsError(f"{path}: missing prediction for case '{files.case_id}'")
    if files.seg is None:
        raise BratsError(f"case '{files.case_id}' in {ref_dir} has no segmentation; it cannot be evaluated")
    ref_name = files.display(files.seg)
    ref, ref_affine, spacing = read_nifti(Path(files.seg), ref_name)
    pred, pred_affine, _ = read_nifti(path)
    check_same_geometry(str(path), pred.shape, pred_affine, f"the reference {ref_name}", ref.shape, ref_affine)
    pred, ref = check_labels(pred, str(path), files.brats2023), check_labels(ref, ref_name, files.brats2023)
    return evaluate_case(pred, ref, spacing, files.case_id)


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
    JSON-serialisable ``extra`` items (a record of the model, such as its ``fit_seconds`` and checkpoint), which
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
        *([f"Not scored, no prediction ({len(summary['missing_predictions'])} of {summary['n_references']} "
           f"references): {', '.join(summary['missing_predictions'])}.", ""]
          if summary.get("missing_predictions") else []),
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


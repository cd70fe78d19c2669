"""``brats compare``: every model on the same test cases, split and metric, in one table.

    brats compare --data DIR [--split FILE] [--use-shipped] [--out results/] [--models naive,ridge,...]
    brats compare --data DIR --folds 5          # patient-level cross-validation

Trains (or, with ``--use-shipped``, loads the shipped artifacts of) Naive, Ridge, Decision tree, KNN, Ensemble,
U-Net and U-Net + SSPP on the split's train (and val) cases, loads each test case once, lets every model
predict it and scores all of them with the shared harness (:mod:`brats_core.evaluation`: 3D per case in the
original voxel space, WT/TC/ET Dice and HD95). A model that fails (training, loading or any prediction) is
reported in its row; the others go on.

Writes under ``--out``: ``compare.md`` and ``compare.csv`` (per model: mean and sd of Dice and HD95 per region,
the original project's legacy slice score, training time, prediction time per case), ``compare_dice.png``
(per-case Dice per model and region), ``compare_case.png`` (the test slice with the largest tumour: modalities,
truth and every prediction), and per model ``compare/<model>/`` with the harness's ``per_case.csv``,
``summary.json`` and ``summary.md`` and the trained artifact (``compare/fold_<k>/<model>/`` per fold).

``--folds K`` trains on K-1 folds and tests on the remaining one, for each of the split's ``folds`` (a fresh
patient-level K-fold partition of the split's cases when the split holds another number of folds); the
validation cases of a fold come from its training folds. Rows per fold and pooled over all cases.

Expected time of ``--folds 5`` on the BraTS 2020 training set (369 cases: per fold ~74 test and ~295 training
cases), one GPU and 16 CPU cores, default options: about 6-7 h, mostly CPU-bound.

- naive atlas: ~1-2 s per training case, ~5 min per fold;
- classical models: ~2-6 s per training case (one load, preprocessing, features of 4,000 voxels) plus tuning on
  the validation cases, ~20 min per fold;
- U-Net and U-Net + SSPP: the slice cache is built once (~2 s per case), then per model and fold 160,000
  training slices (40 epochs x 250 steps x batch 16) plus 40 validations, ~3-5 min at the rates measured on one
  H200 with both models training at once, data loading included (U-Net ~1,100, SSPP ~600 slices/s);
- prediction and scoring: each of the 369 cases once, ~25 s for all seven models (every classical model computes
  its own features; KNN queries; 3D HD95 at ~0.6 s per case and model), ~2.5 h.

Measured on 2 shared CPU cores with 240x240x155 cases (``--models naive,ridge`` on the 20 shared cases):
loading 2.3 s per case, naive fit 2.2 s per training case, ridge features 8.3 s per training case (then loading
each training case twice; now once) and tuning 25 s per validation case, prediction 0.13 s (naive) and 5-9 s
(ridge) per case, scoring 0.6 s per case and model.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from brats_core.cases import CaseFiles, find_cases, load_case
from brats_core.config import DEFAULT_SPLIT, HD95_ONE_EMPTY, REGIONS, RESULTS_DIR, PreprocessConfig
from brats_core.errors import BratsError
from brats_core.evaluation import Segmenter, evaluate_case, timed_predict, write_reports
from brats_core.figures import case_figure, dice_plot, largest_tumour_slice
from brats_core.split import group_by_patient, load_split, make_split, patient_id, save_split

#: Every model, in table order.
MODELS: tuple[str, ...] = ("naive", "ridge", "tree", "knn", "ensemble", "unet", "sspp")
DISPLAY: dict[str, str] = {
    "naive": "Naive (mean atlas)",
    "ridge": "Ridge",
    "tree": "Decision tree",
    "knn": "KNN",
    "ensemble": "Ensemble (vote)",
    "unet": "U-Net",
    "sspp": "U-Net + SSPP",
}
LEGACY_LABEL = "legacy slice score (original project's metric; not comparable)"
#: The seed project's headline numbers (its own data, metric and split) and the row each one names.
SEED_NUMBERS: dict[str, float] = {"naive": 56.39, "ensemble": 58.21, "unet": 64.79, "sspp": 85.37}
SEED_WHY = (
    "The seed's numbers are not comparable with ours or with each other: they came from three different "
    "datasets, from a metric that averaged the background Dice into every score and scored tumour-free slices 1 "
    "(our legacy column reimplements it), and from random slice splits that put slices of one patient on both "
    "sides of the split; ours score every model on the same held-out patients, in 3D, with the BraTS Dice."
)
#: Files the harness writes per model; cleared before a run so that a failed model leaves no stale report.
REPORT_FILES: tuple[str, ...] = ("per_case.csv", "summary.json", "summary.md", "error.txt")
REPORT_METRICS: tuple[str, ...] = ("dice", "hd95")
CSV_COLUMNS: tuple[str, ...] = (
    "fold", "model", "name", "status", "error", "n_cases",
    *(f"{r}_{m}_{s}" for m in REPORT_METRICS for r in REGIONS for s in ("mean", "sd")),
    "legacy_slice_score_not_comparable_mean", "legacy_slice_score_not_comparable_sd",
    "train_seconds", "train_time", "predict_seconds_per_case",
)  # fmt: skip

#: Smoke-test settings of ``--quick``: tiny models, few samples and steps (numbers meaningless, minutes -> s).
QUICK_ML = {"preprocess_config": PreprocessConfig(size=32), "samples_per_case": 400, "knn_max_samples": 600}
#: SSPP's attention windows (2, 4, 8) need the 8x8 bottleneck of 128 px slices; base width 4 keeps it tiny.
QUICK_DL = {"base_width": 4, "size": 128, "epochs": 1, "max_steps_per_epoch": 2, "batch_size": 4, "workers": 0}


@dataclass(frozen=True)
class Options:
    """How models are trained and run (not which ones)."""

    quick: bool = False
    device: str | None = None
    dl_preset: str = "default"
    epochs: int | None = None
    cache_dir: Path | None = None
    seed: int = 0


@dataclass(frozen=True)
class TrainJob:
    """What a family's trainer gets: the data and split of this run, its file lists and where to write."""

    data: Path
    split_path: Path
    train_files: list[CaseFiles]
    val_files: list[CaseFiles]
    options: Options
    out_dir: Path  # <out>/compare[/fold_<k>]; each model writes under out_dir/<model>/


@dataclass
class ModelRun:
    """One model in one split: its segmenter, timings, rows or the error that stopped it."""

    name: str
    segmenter: Segmenter | None = None
    train_seconds: float | None = None
    train_time: str = "n/a"
    error: str | None = None
    rows: list[dict] = field(default_factory=list)
    summary: dict | None = None

    def fail(self, stage: str, exc: BaseException, model_dir: Path) -> None:
        self.error = f"{stage}: {type(exc).__name__}: {exc}"
        self.segmenter, self.rows = None, []
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "error.txt").write_text(
            self.error + "\n\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        )
        tqdm.write(f"compare: {self.name} failed ({self.error.splitlines()[0]})", file=sys.stderr)


@dataclass
class Sample:
    """The axial slice of the figure: the largest tumour area of any test case's truth."""

    case_id: str
    z: int
    area: int
    images: np.ndarray  # (4, X, Y)
    truth: np.ndarray  # (X, Y)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ families
def _train_naive(names: list[str], job: TrainJob) -> dict[str, tuple[Segmenter, float]]:
    from Naive_Model.naive_mean_model import NaiveMeanSegmenter

    segmenter = NaiveMeanSegmenter.fit(load_case(files) for files in job.train_files)
    segmenter.save(job.out_dir / "naive" / "naive.npz")
    return {"naive": (segmenter, segmenter.fit_seconds)}


def _ml_seconds(info: dict) -> float | None:
    """Training time of an ML model as its ``info`` records it: shared features + its own fits + tuning."""
    parts = [info.get(key) for key in ("features_seconds", "fit_seconds", "tuning_seconds")]
    return None if any(p is None for p in parts) else float(sum(parts))


def _train_ml(names: list[str], job: TrainJob) -> dict[str, tuple[Segmenter, float]]:
    from Machine_Learning_Model.train import train

    settings = QUICK_ML if job.options.quick else {}
    trained = train(names, job.train_files, job.val_files, seed=job.options.seed, log=tqdm.write, **settings)
    out = {}
    for name, segmenter in trained.items():
        segmenter.save(job.out_dir / name / f"{name}.joblib")
        segmenter.set_n_jobs(-1)
        out[name] = (segmenter, _ml_seconds(segmenter.info))
    return out


def _train_dl(names: list[str], job: TrainJob) -> dict[str, tuple[Segmenter, float]]:
    from brats_core.segmenters import load_segmenter
    from Deep_Learning_Model.train import run
    from Deep_Learning_Model.training.distributed import DistContext

    (name,) = names
    run_dir = job.out_dir / name / "run"
    if run_dir.exists():  # compare's own previous run: a training folder refuses to be reused
        shutil.rmtree(run_dir)
    overrides: dict = {"model": name, "data": str(job.data), "split": str(job.split_path), "out": str(run_dir),
                       "seed": job.options.seed, "preset": job.options.dl_preset}
    if job.options.quick:
        overrides.update(QUICK_DL)
    if job.options.epochs is not None:
        overrides["epochs"] = job.options.epochs
    if job.options.device is not None:
        overrides["device"] = job.options.device
    if job.options.cache_dir is not None:
        overrides["cache_dir"] = str(job.options.cache_dir)
    start = time.perf_counter()
    run(overrides, DistContext())
    seconds = time.perf_counter() - start
    return {name: (load_segmenter(name, run_dir / "export.pt", device=job.options.device), seconds)}


def _naive_record(segmenter) -> tuple[float | None, list[str]]:
    metadata = segmenter.metadata()
    return metadata.get("fit_seconds"), list(metadata.get("case_ids", []))


def _ml_record(segmenter) -> tuple[float | None, list[str]]:
    info = segmenter.info
    return _ml_seconds(info), [*info.get("train_case_ids", []), *info.get("val_case_ids", [])]


def _dl_record(segmenter) -> tuple[float | None, list[str]]:
    info = segmenter.meta.get("info", {})
    return info.get("train_seconds"), [*info.get("train_cases", []), *info.get("val_cases", [])]


@dataclass(frozen=True)
class Family:
    """Models trained together (the ML models share their features), how to train them and read their records."""

    models: tuple[str, ...]
    train: Callable[[list[str], TrainJob], dict[str, tuple[Segmenter, float | None]]]
    #: (recorded training seconds or None, ids of the cases the artifact was trained or tuned on)
    record: Callable[[Segmenter], tuple[float | None, list[str]]]


FAMILIES: dict[str, Family] = {
    "naive": Family(("naive",), _train_naive, _naive_record),
    "ml": Family(("ridge", "tree", "knn", "ensemble"), _train_ml, _ml_record),
    "unet": Family(("unet",), _train_dl, _dl_record),
    "sspp": Family(("sspp",), _train_dl, _dl_record),
}


# ------------------------------------------------------------------------------------------ one split
def _prepare(runs: dict[str, ModelRun], job: TrainJob, use_shipped: bool, test_ids: list[str],
             bar: tqdm) -> None:
    """Train (or load) every requested model; a family that raises fails all its requested models."""
    from brats_core.segmenters import load_segmenter

    for family in FAMILIES.values():
        names = [name for name in family.models if name in runs]
        if not names:
            continue
        bar.set_postfix_str(", ".join(names))
        if use_shipped:
            for name in names:
                try:
                    segmenter = load_segmenter(name, device=job.options.device)
                    seconds, trained_on = family.record(segmenter)
                    leaked = sorted(set(trained_on) & set(test_ids))
                    if leaked:
                        raise BratsError(
                            f"the shipped {name} artifact was trained or tuned on test case(s) {', '.join(leaked)}; "
                            "train it on this split instead (omit --use-shipped)"
                        )
                except Exception as exc:  # noqa: BLE001 - reported in the model's row, the others go on
                    runs[name].fail("load", exc, job.out_dir / name)
                else:
                    runs[name].segmenter, runs[name].train_seconds = segmenter, seconds
                    runs[name].train_time = "n/a" if seconds is None else f"shipped: {seconds:.0f} s (recorded)"
                bar.update()
            continue
        try:
            trained = family.train(names, job)
        except Exception as exc:  # noqa: BLE001 - reported in the rows of the family's models
            for name in names:
                runs[name].fail("training", exc, job.out_dir / name)
        else:
            for name in names:
                segmenter, seconds = trained[name]
                runs[name].segmenter, runs[name].train_seconds = segmenter, seconds
                runs[name].train_time = "n/a" if seconds is None else f"{seconds:.1f} s"
        bar.update(len(names))


def _predict(runs: dict[str, ModelRun], test_files: list[CaseFiles], out_dir: Path,
             sample: Sample | None) -> Sample | None:
    """Load each test case once; every live model predicts it and is scored. Returns the figure's sample."""
    for files in tqdm(test_files, desc="predict", unit="case"):
        case = load_case(files)
        z = largest_tumour_slice(case.seg)
        area = int(np.count_nonzero(case.seg[..., z]))
        keep = sample is None or area > sample.area
        if keep:
            sample = Sample(case.case_id, z, area, case.images[..., z].copy(), case.seg[..., z].copy())
        live = [run for run in runs.values() if run.error is None]
        for run in tqdm(live, desc=case.case_id, unit="model", leave=False):
            try:
                labels, seconds = timed_predict(run.segmenter, case)
            except Exception as exc:  # noqa: BLE001 - the model's row reports it; the others go on
                run.fail(f"prediction of case '{case.case_id}'", exc, out_dir / run.name)
                continue
            run.rows.append({**evaluate_case(labels, case), "predict_seconds": seconds})
            if keep:
                sample.predictions[run.name] = labels[..., z].copy()
    return sample


def _report(runs: dict[str, ModelRun], out_dir: Path, what: str) -> None:
    for run in runs.values():
        if run.error is None:
            run.summary = write_reports(run.rows, out_dir / run.name, title=f"{DISPLAY[run.name]}: {what}")


def _clear(model_dirs: Sequence[Path]) -> None:
    for folder in model_dirs:
        for name in REPORT_FILES:
            (folder / name).unlink(missing_ok=True)


def run_split(data: Path, split_path: Path, split: dict, files: dict[str, CaseFiles], models: Sequence[str],
              out_dir: Path, options: Options, use_shipped: bool = False,
              sample: Sample | None = None) -> tuple[dict[str, ModelRun], Sample | None]:
    """Train or load ``models``, predict and score the split's test cases; reports under ``out_dir/<model>/``."""
    test_ids = list(split["test"])
    if not test_ids:
        raise BratsError(f"{split_path}: the split has no test case to compare the models on")
    unlabelled = [str(files[i].images["t1"].parent) for i in test_ids if files[i].seg is None]
    if unlabelled:
        raise BratsError(f"test case(s) without a segmentation file cannot be scored: {', '.join(unlabelled)}")
    _clear([out_dir / name for name in models])
    job = TrainJob(data, split_path, [files[i] for i in split["train"]], [files[i] for i in split["val"]],
                   options, out_dir)
    runs = {name: ModelRun(name) for name in models}
    with tqdm(total=len(runs), desc="load models" if use_shipped else "train models", unit="model") as bar:
        _prepare(runs, job, use_shipped, test_ids, bar)
    sample = _predict(runs, [files[i] for i in test_ids], out_dir, sample)
    _report(runs, out_dir, f"{len(test_ids)} test cases of {split_path.name}")
    for run in runs.values():
        run.segmenter = None  # free the models before the next fold
    return runs, sample


# ------------------------------------------------------------------------------------------ folds
def fold_splits(split: dict, k: int, seed: int) -> list[dict]:
    """One split per fold: test = fold f, val and train from the other folds (val as large as the split's own).

    Uses the split's ``folds`` when it has ``k`` of them, else a fresh patient-level ``k``-fold partition
    (:func:`brats_core.split.make_split`) of all its cases. Validation patients are drawn whole (all their
    timepoints, :func:`brats_core.split.patient_id`); each fold keeps at least two training patients.
    """
    all_ids = sorted({i for key in ("train", "val", "test") for i in split[key]})
    folds = split["folds"] if len(split["folds"]) == k else make_split(all_ids, seed=seed, folds=k)["folds"]
    if len(folds) != k:
        raise BratsError(f"{len(all_ids)} cases are too few for {k} folds")
    out = []
    for f, fold in enumerate(folds):
        rest = group_by_patient(sorted(set(all_ids) - set(fold)))
        patients = list(rest)
        n_val = min(max(len({patient_id(i) for i in split["val"]}), 1), max(len(patients) - 2, 0))
        order = [rest[patients[i]] for i in np.random.default_rng([seed, f]).permutation(len(patients))]
        out.append({
            "seed": seed, "train": sorted(i for ids in order[n_val:] for i in ids),
            "val": sorted(i for ids in order[:n_val] for i in ids), "test": sorted(fold),
            "folds": [sorted(fold_) for fold_ in folds], "created": date.today().isoformat(),
            "note": f"Fold {f + 1} of {k}: test = fold {f + 1}; {n_val} validation patient(s) drawn from the "
                    f"other folds with seed {seed}; the rest train.",
        })  # fmt: skip
    return out


def _pool(fold_runs: list[dict[str, ModelRun]], models: Sequence[str], out_dir: Path) -> dict[str, ModelRun]:
    """Every model over all folds: rows of all test cases, summed training time, the first error if any."""
    pooled = {}
    for name in models:
        runs = [fold[name] for fold in fold_runs]
        errors = [f"fold {f + 1}: {run.error}" for f, run in enumerate(runs) if run.error is not None]
        seconds = [run.train_seconds for run in runs]
        total = None if any(s is None for s in seconds) else float(sum(seconds))
        note = "n/a" if total is None else f"{total:.1f} s ({len(runs)} folds)"
        pooled[name] = ModelRun(name, train_seconds=total, train_time=note, error="; ".join(errors) or None,
                                rows=[row for run in runs for row in run.rows] if not errors else [])
    _clear([out_dir / name for name in models])
    for run in pooled.values():
        if run.error is not None:
            (out_dir / run.name).mkdir(parents=True, exist_ok=True)
            (out_dir / run.name / "error.txt").write_text(run.error + "\n")
    _report(pooled, out_dir, f"{len(fold_runs)}-fold cross-validation, all folds")
    return pooled


# ------------------------------------------------------------------------------------------ outputs
def _fmt(stats: dict, digits: int) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"


def _csv_row(fold: str, run: ModelRun) -> dict:
    row = {"fold": fold, "model": run.name, "name": DISPLAY[run.name], "train_time": run.train_time,
           "train_seconds": "" if run.train_seconds is None else f"{run.train_seconds:.3f}"}
    if run.error is not None:
        return {**row, "status": "failed", "error": run.error}
    summary = run.summary
    row.update(status="ok", error="", n_cases=summary["n_cases"],
               predict_seconds_per_case=f"{summary['predict_seconds_mean']:.4f}")
    for region in REGIONS:
        for metric in REPORT_METRICS:
            row[f"{region}_{metric}_mean"] = f"{summary[region][metric]['mean']:.6f}"
            row[f"{region}_{metric}_sd"] = f"{summary[region][metric]['sd']:.6f}"
    row["legacy_slice_score_not_comparable_mean"] = f"{summary['legacy']['mean']:.6f}"
    row["legacy_slice_score_not_comparable_sd"] = f"{summary['legacy']['sd']:.6f}"
    return row


def write_csv(path: Path, tables: list[tuple[str, dict[str, ModelRun]]]) -> Path:
    """``compare.csv``: one row per (fold, model); ``fold`` is ``test``, a fold number or ``all``."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        for fold, runs in tables:
            writer.writerows(_csv_row(fold, run) for run in runs.values())
    return path


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(runs: dict[str, ModelRun]) -> list[str]:
    regions = list(REGIONS)
    lines = [
        "| Model | " + " | ".join(f"{r} Dice" for r in regions) + " | "
        + " | ".join(f"{r} HD95 (mm)" for r in regions)
        + f" | {LEGACY_LABEL} | Training time | Prediction time per case |",
        "| --- " * (4 + 2 * len(regions)) + "|",
    ]
    for run in runs.values():
        if run.error is not None:
            blanks = " | ".join(["—"] * (2 * len(regions)))
            lines.append(f"| {DISPLAY[run.name]} | **failed**: {_cell(run.error)} | {blanks} | "
                         f"{run.train_time} | — |")
            continue
        s = run.summary
        cells = [_fmt(s[r]["dice"], 3) for r in regions] + [_fmt(s[r]["hd95"], 1) for r in regions]
        lines.append(f"| {DISPLAY[run.name]} | {' | '.join(cells)} | {_fmt(s['legacy'], 3)} | {run.train_time} | "
                     f"{s['predict_seconds_mean']:.2f} s |")
    return lines


def _seed_table(runs: dict[str, ModelRun]) -> list[str]:
    lines = [
        "| Model | Seed's reported score | Ours: mean Dice WT / TC / ET (x100) | Ours: legacy slice score (x100) |",
        "| --- | --- | --- | --- |",
    ]
    for name, number in SEED_NUMBERS.items():
        run = runs.get(name)
        if run is None or run.error is not None:
            ours, legacy = ("not run", "—") if run is None else ("failed", "—")
        else:
            ours = " / ".join(f"{100 * run.summary[r]['dice']['mean']:.2f}" for r in REGIONS)
            legacy = f"{100 * run.summary['legacy']['mean']:.2f}"
        lines.append(f"| {DISPLAY[name]} | {number:.2f} | {ours} | {legacy} |")
    return lines


def _fold_table(fold_runs: list[dict[str, ModelRun]], models: Sequence[str]) -> list[str]:
    lines = ["| Model | " + " | ".join(f"fold {f + 1}" for f in range(len(fold_runs))) + " | sd of fold means |",
             "| --- " * (len(fold_runs) + 2) + "|"]
    for name in models:
        cells, means = [], []
        for fold in fold_runs:
            run = fold[name]
            if run.error is not None:
                cells.append("failed")
                continue
            values = [run.summary[r]["dice"]["mean"] for r in REGIONS]
            means.append(statistics.fmean(values))
            cells.append(" / ".join(f"{v:.3f}" for v in values))
        spread = f"{statistics.stdev(means):.3f}" if len(means) > 1 else "—"
        lines.append(f"| {DISPLAY[name]} | {' | '.join(cells)} | {spread} |")
    return lines


def machine() -> str:
    """Platform, CPU count and the torch device the models run on."""
    import torch

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s))"
    else:
        device = "cpu (no CUDA device)"
    return f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} on {device}"


def write_markdown(path: Path, runs: dict[str, ModelRun], header: dict[str, str],
                   fold_runs: list[dict[str, ModelRun]] | None = None, figures: Sequence[str] = ()) -> Path:
    lines = ["# Model comparison", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += [
        "",
        f"Mean ± sd over cases; every model scored on the same test cases by the shared harness, 3D per case in "
        f"the original voxel space, regions WT={{1,2,4}}, TC={{1,4}}, ET={{4}}. Both masks empty: Dice 1, HD95 0; "
        f"one empty: Dice 0, HD95 {HD95_ONE_EMPTY} mm. Training time includes loading and preprocessing the "
        f"training cases; prediction time is `predict` alone (one case already loaded).",
        "",
        *_table(runs),
        "",
        f"The {LEGACY_LABEL} is kept only to put the seed's numbers in context: it averages the background Dice "
        "of 128x128 axial slices into the score and scores tumour-free slices 1, so an empty prediction already "
        "scores high.",
    ]
    if fold_runs:
        lines += ["", "## Mean Dice WT / TC / ET per fold", "", *_fold_table(fold_runs, list(runs))]
    lines += ["", "## The seed's numbers beside ours", "", *_seed_table(runs), "", SEED_WHY]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    path.write_text("\n".join(lines) + "\n")
    return path


def _figures(out: Path, runs: dict[str, ModelRun], sample: Sample | None, what: str) -> list[str]:
    names = []
    per_case = {DISPLAY[name]: run.rows for name, run in runs.items()}
    dice_plot(per_case, out / "compare_dice.png", title=f"Per-case Dice, {what}")
    names.append("compare_dice.png")
    if sample is not None:
        dice = {(name, row["case_id"]): row["WT_dice"] for name, run in runs.items() for row in run.rows}
        predictions = {DISPLAY[name]: sample.predictions.get(name) if run.error is None else None
                       for name, run in runs.items()}
        captions = {DISPLAY[name]: f"WT Dice {dice[name, sample.case_id]:.3f}"
                    for name in runs if (name, sample.case_id) in dice}
        case_figure(sample.images, sample.truth, predictions, out / "compare_case.png",
                    title=f"{sample.case_id}, axial slice {sample.z} (largest tumour of the test cases)",
                    captions=captions)
        names.append("compare_case.png")
    return names


# ------------------------------------------------------------------------------------------ command
def resolve_split(split_path: Path | None, files: dict[str, CaseFiles], out_dir: Path,
                  seed: int) -> tuple[Path, dict, str]:
    """The split to use: ``split_path``; else the shared split when the data holds its cases; else a fresh one."""
    ids = sorted(files)
    if split_path is not None:
        return split_path, load_split(split_path, ids), str(split_path)
    if DEFAULT_SPLIT.is_file():
        split = load_split(DEFAULT_SPLIT)
        if {i for key in ("train", "val", "test") for i in split[key]} <= set(ids):
            return DEFAULT_SPLIT, split, f"{DEFAULT_SPLIT.relative_to(DEFAULT_SPLIT.parents[1])} (default)"
    path = save_split(make_split(ids, seed=seed), out_dir / "split.json")
    return path, load_split(path), f"{path} (made for this run, seed {seed})"


def compare(data: Path, split_path: Path | None = None, models: Sequence[str] = MODELS,
            out: Path = RESULTS_DIR, options: Options = Options(), use_shipped: bool = False,
            folds: int | None = None, command: str = "brats compare") -> dict[str, ModelRun]:
    """Run the comparison and write every output (see module docstring); returns the final row of each model."""
    models = [name for name in MODELS if name in models]
    work = out / "compare"
    files = {case.case_id: case for case in find_cases(data)}
    split_path, split, split_text = resolve_split(split_path, files, work, options.seed)
    header = {
        "Command": f"`{command}`",
        "Date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "Machine": machine(),
        "Data": f"{Path(data).name} ({len(files)} cases found)",
        "Split": split_text,
        "Models": "shipped artifacts (--use-shipped)" if use_shipped
        else "trained by this command" + (" in quick mode (--quick: tiny smoke-test models)" if options.quick else ""),
    }
    if folds is None:
        runs, sample = run_split(data, split_path, split, files, models, work, options, use_shipped)
        header["Test cases"] = f"{len(split['test'])}: {', '.join(split['test'])}"
        tables, fold_runs = [("test", runs)], None
        what = f"{len(split['test'])} test case{'s' if len(split['test']) > 1 else ''}"
    else:
        fold_runs, sample = [], None
        splits = fold_splits(split, folds, options.seed)
        for f, fold_split in enumerate(splits):
            tqdm.write(f"compare: fold {f + 1} of {folds}", file=sys.stderr)
            fold_dir = work / f"fold_{f + 1}"
            fold_path = save_split(fold_split, fold_dir / "split.json")
            fold, sample = run_split(data, fold_path, fold_split, files, models, fold_dir, options, False, sample)
            fold_runs.append(fold)
        runs = _pool(fold_runs, models, work)
        n_cases = sum(len(fold_split["test"]) for fold_split in splits)
        header["Test cases"] = f"{folds}-fold cross-validation, each of the {n_cases} cases tested once"
        tables = [(str(f + 1), fold) for f, fold in enumerate(fold_runs)] + [("all", runs)]
        what = f"{folds}-fold cross-validation ({n_cases} cases)"
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(out, runs, sample, what)
    write_csv(out / "compare.csv", tables)
    write_markdown(out / "compare.md", runs, header, fold_runs, figures)
    return runs


def main(argv: list[str]) -> int:
    from Deep_Learning_Model.training.config import PRESETS

    parser = argparse.ArgumentParser(prog="brats compare", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder (or .zip) of BraTS cases with seg")
    parser.add_argument("--split", type=Path, help="patient-level split JSON (default: splits/brats_dev.json when "
                        "the data holds its cases, else a fresh split written to <out>/compare/split.json)")
    parser.add_argument("--use-shipped", action="store_true", help="load the shipped artifacts instead of training")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder (default results/)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--folds", type=int, help="K-fold patient-level cross-validation instead of the test split")
    parser.add_argument("--quick", action="store_true", help="tiny models and few samples/steps: a smoke test")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device of the deep models (default: auto)")
    parser.add_argument("--preset", default="default", choices=tuple(PRESETS),
                        help="training preset of the deep models (default: default)")
    parser.add_argument("--epochs", type=int, help="override the deep models' number of epochs")
    parser.add_argument("--cache-dir", type=Path, help="slice cache root of the deep models (default: .cache/slices)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training (and of a fresh split)")
    args = parser.parse_args(argv)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown or not models:
        parser.error(f"--models: unknown {unknown}; choose from {','.join(MODELS)}" if unknown else "--models is empty")
    if args.folds is not None and args.use_shipped:
        parser.error("--folds trains a model per fold; it cannot use the shipped artifacts")
    if args.folds is not None and args.folds < 2:
        parser.error("--folds must be at least 2")
    options = Options(quick=args.quick, device=args.device, dl_preset=args.preset, epochs=args.epochs,
                      cache_dir=args.cache_dir, seed=args.seed)
    start = time.perf_counter()
    runs = compare(args.data, args.split, models, args.out, options, args.use_shipped, args.folds,
                   command=shlex.join(["brats", "compare", *argv]))
    print("\n".join(_table(runs)))
    print(f"\nwrote {args.out / 'compare.md'}, compare.csv and the figures in {time.perf_counter() - start:.0f} s")
    failed = [name for name, run in runs.items() if run.error is not None]
    if failed:
        print(f"brats compare: {len(failed)} model(s) failed: {', '.join(failed)} (see their rows)", file=sys.stderr)
        return 1
    return 0

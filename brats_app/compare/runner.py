"""One split of ``brats compare``: train (or load) the models, predict every test case once, score them."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from brats_app.registry import REGISTRY, families, load_segmenter, resolve
from brats_core.cases import CaseFiles, load_case
from brats_core.errors import BratsError
from brats_core.evaluation import Segmenter, segment_case, write_reports
from brats_core.figures import largest_tumour_slice

#: Files the harness writes per model; cleared before a run so that a failed model leaves no stale report.
REPORT_FILES: tuple[str, ...] = ("per_case.csv", "summary.json", "summary.md", "error.txt")


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
    #: The models trained so far in this split: name -> (segmenter, training seconds); a fusion takes its members here.
    trained: dict[str, tuple[Segmenter, float | None]] = field(default_factory=dict)


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


def _prepare(runs: dict[str, ModelRun], job: TrainJob, use_shipped: bool, test_ids: list[str],
             bar: tqdm) -> None:
    """Train (or load) every requested model; a family that raises fails all its requested models."""
    for specs in families().values():
        names = [spec.name for spec in specs if spec.name in runs]
        if not names:
            continue
        bar.set_postfix_str(", ".join(names))
        if use_shipped:
            for name in names:
                try:
                    segmenter = load_segmenter(name, device=job.options.device)
                    provenance = segmenter.provenance
                    seconds = provenance.train_seconds
                    leaked = sorted(set(provenance.seen_cases) & set(test_ids))
                    if leaked:
                        raise BratsError(
                            f"the shipped {name} checkpoint was trained or tuned on test case(s) "
                            f"{', '.join(leaked)}; train it on this split instead (omit --use-shipped)"
                        )
                except Exception as exc:  # noqa: BLE001 - reported in the model's row, the others go on
                    runs[name].fail("load", exc, job.out_dir / name)
                else:
                    runs[name].segmenter, runs[name].train_seconds = segmenter, seconds
                    runs[name].train_time = "n/a" if seconds is None else f"shipped: {seconds:.0f} s (recorded)"
                bar.update()
            continue
        try:
            trained = resolve(specs[0].fit)(names, job)
        except Exception as exc:  # noqa: BLE001 - reported in the rows of the family's models
            for name in names:
                runs[name].fail("training", exc, job.out_dir / name)
        else:
            for name in names:
                segmenter, seconds = trained[name]
                job.trained[name] = trained[name]
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
                done = segment_case(run.segmenter, case)
            except Exception as exc:  # noqa: BLE001 - the model's row reports it; the others go on
                run.fail(f"prediction of case '{case.case_id}'", exc, out_dir / run.name)
                continue
            run.rows.append({**done.scores, "predict_seconds": done.seconds})
            if keep:
                sample.predictions[run.name] = done.labels[..., z].copy()
    return sample


def report_runs(runs: dict[str, ModelRun], out_dir: Path, what: str) -> None:
    for run in runs.values():
        if run.error is None:
            run.summary = write_reports(run.rows, out_dir / run.name, title=f"{REGISTRY[run.name].display}: {what}")


def clear_reports(model_dirs: Sequence[Path]) -> None:
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
    clear_reports([out_dir / name for name in models])
    job = TrainJob(data, split_path, [files[i] for i in split["train"]], [files[i] for i in split["val"]],
                   options, out_dir)
    runs = {name: ModelRun(name) for name in models}
    with tqdm(total=len(runs), desc="load models" if use_shipped else "train models", unit="model") as bar:
        _prepare(runs, job, use_shipped, test_ids, bar)
    sample = _predict(runs, [files[i] for i in test_ids], out_dir, sample)
    report_runs(runs, out_dir, f"{len(test_ids)} test cases of {split_path.name}")
    for run in runs.values():
        run.segmenter = None  # free the models before the next fold
    return runs, sample



"""The outputs of ``brats compare``: ``compare.csv``, ``compare.md`` and the figures."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from pathlib import Path

from brats_app.compare.runner import ModelRun, Sample
from brats_app.registry import REGISTRY
from brats_core.config import HD95_ONE_EMPTY, REGIONS
from brats_core.figures import case_figure, dice_plot
from brats_core.provenance import this_machine

LEGACY_LABEL = "legacy slice score (original project's metric; not comparable)"
#: The seed project's headline numbers (its own data, metric and split) and the row each one names.
SEED_NUMBERS: dict[str, float] = {name: s.seed_score for name, s in REGISTRY.items() if s.seed_score is not None}
SEED_WHY = (
    "The seed's numbers are not comparable with ours or with each other: they came from three different "
    "datasets, from a metric that averaged the background Dice into every score and scored tumour-free slices 1 "
    "(our legacy column reimplements it), and from random slice splits that put slices of one patient on both "
    "sides of the split; ours score every model on the same held-out patients, in 3D, with the BraTS Dice."
)
REPORT_METRICS: tuple[str, ...] = ("dice", "hd95")
CSV_COLUMNS: tuple[str, ...] = (
    "fold", "model", "name", "status", "error", "n_cases",
    *(f"{r}_{m}_{s}" for m in REPORT_METRICS for r in REGIONS for s in ("mean", "sd")),
    "legacy_slice_score_not_comparable_mean", "legacy_slice_score_not_comparable_sd",
    "train_seconds", "train_time", "predict_seconds_per_case",
)  # fmt: skip


def _fmt(stats: dict, digits: int) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"


def _csv_row(fold: str, run: ModelRun) -> dict:
    row = {"fold": fold, "model": run.name, "name": REGISTRY[run.name].display, "train_time": run.train_time,
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


def table(runs: dict[str, ModelRun]) -> list[str]:
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
            lines.append(f"| {REGISTRY[run.name].display} | **failed**: {_cell(run.error)} | {blanks} | "
                         f"{run.train_time} | — |")
            continue
        s = run.summary
        cells = [_fmt(s[r]["dice"], 3) for r in regions] + [_fmt(s[r]["hd95"], 1) for r in regions]
        lines.append(f"| {REGISTRY[run.name].display} | {' | '.join(cells)} | {_fmt(s['legacy'], 3)} | {run.train_time} | "
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
        lines.append(f"| {REGISTRY[name].display} | {number:.2f} | {ours} | {legacy} |")
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
        lines.append(f"| {REGISTRY[name].display} | {' | '.join(cells)} | {spread} |")
    return lines


def per_case_table(runs: dict[str, ModelRun]) -> list[str]:
    """One row per scored case: each model's Dice WT / TC / ET on it (out of fold in a cross-validation)."""
    live = {name: {row["case_id"]: row for row in run.rows} for name, run in runs.items() if run.error is None}
    cases = sorted({case_id for rows in live.values() for case_id in rows})
    lines = ["| Case | " + " | ".join(REGISTRY[name].display for name in live) + " |",
             "| --- " * (len(live) + 1) + "|"]
    for case_id in cases:
        cells = [" / ".join(f"{rows[case_id][f'{r}_dice']:.3f}" for r in REGIONS) if case_id in rows else "—"
                 for rows in live.values()]
        lines.append(f"| {case_id} | {' | '.join(cells)} |")
    return lines


def machine() -> str:
    """Platform, CPU count and the torch device the models run on."""
    import torch

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s))"
    else:
        device = "cpu (no CUDA device)"
    return f"{this_machine()}, torch {torch.__version__} on {device}"


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
        *table(runs),
        "",
        f"The {LEGACY_LABEL} is kept only to put the seed's numbers in context: it averages the background Dice "
        "of 128x128 axial slices into the score and scores tumour-free slices 1, so an empty prediction already "
        "scores high.",
    ]
    if fold_runs:
        lines += ["", "## Mean Dice WT / TC / ET per fold", "", *_fold_table(fold_runs, list(runs))]
    lines += ["", "## Dice WT / TC / ET per case", "", *per_case_table(runs)]
    lines += ["", "## The seed's numbers beside ours", "", *_seed_table(runs), "", SEED_WHY]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_figures(out: Path, runs: dict[str, ModelRun], sample: Sample | None, what: str) -> list[str]:
    names = []
    per_case = {REGISTRY[name].display: run.rows for name, run in runs.items()}
    dice_plot(per_case, out / "compare_dice.png", title=f"Per-case Dice, {what}")
    names.append("compare_dice.png")
    if sample is not None:
        dice = {(name, row["case_id"]): row["WT_dice"] for name, run in runs.items() for row in run.rows}
        predictions = {REGISTRY[name].display: sample.predictions.get(name) if run.error is None else None
                       for name, run in runs.items()}
        captions = {REGISTRY[name].display: f"WT Dice {dice[name, sample.case_id]:.3f}"
                    for name in runs if (name, sample.case_id) in dice}
        case_figure(sample.images, sample.truth, predictions, out / "compare_case.png",
                    title=f"{sample.case_id}, axial slice {sample.z} (largest tumour of the test cases)",
                    captions=captions)
        names.append("compare_case.png")
    return names



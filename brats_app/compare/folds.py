"""The split of ``brats compare`` and its patient-level cross-validation folds, and rows pooled over folds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np

from brats_app.compare.runner import ModelRun, clear_reports, report_runs
from brats_core.cases import CaseFiles
from brats_core.config import DEFAULT_SPLIT
from brats_core.errors import BratsError
from brats_core.split import group_by_patient, load_split, make_split, patient_id, save_split


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


def pool(fold_runs: list[dict[str, ModelRun]], models: Sequence[str], out_dir: Path) -> dict[str, ModelRun]:
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
    clear_reports([out_dir / name for name in models])
    for run in pooled.values():
        if run.error is not None:
            (out_dir / run.name).mkdir(parents=True, exist_ok=True)
            (out_dir / run.name / "error.txt").write_text(run.error + "\n")
    report_runs(pooled, out_dir, f"{len(fold_runs)}-fold cross-validation, all folds")
    return pooled



"""The split of ``brats compare`` (its folds: :func:`brats_core.split.fold_splits`) and rows pooled over folds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from brats_app.compare.runner import ModelRun, clear_reports, report_runs
from brats_core.cases import CaseFiles
from brats_core.config import DEFAULT_SPLIT
from brats_core.errors import BratsError
from brats_core.same_scan import check_distinct_scans
from brats_core.split import load_split, make_split, save_split


def resolve_split(split_path: Path | None, files: dict[str, CaseFiles], out_dir: Path,
                  seed: int) -> tuple[Path, dict, str]:
    """The split to use: ``split_path``; else the shared split when the data holds its cases; else a fresh one.
    Refused when two of its cases hold one scan (:func:`brats_core.same_scan.check_distinct_scans`)."""
    ids = sorted(files)
    shared = load_split(DEFAULT_SPLIT) if split_path is None and DEFAULT_SPLIT.is_file() else None
    if split_path is not None:
        chosen = split_path, load_split(split_path, ids), str(split_path)
    elif shared is not None and _cases(shared) <= set(ids):
        chosen = DEFAULT_SPLIT, shared, f"{DEFAULT_SPLIT.relative_to(DEFAULT_SPLIT.parents[1])} (default)"
    else:
        try:
            made = make_split(ids, seed=seed)
        except BratsError as exc:
            raise BratsError(f"--data holds {len(ids)} case(s), too few for this comparison: {exc}") from None
        path = save_split(made, out_dir / "split.json")
        chosen = path, load_split(path), f"{path} (made for this run, seed {seed})"
    check_distinct_scans([files[i] for i in sorted(_cases(chosen[1]))], f"the cases of split {chosen[2]}")
    return chosen


def _cases(split: dict) -> set[str]:
    return {i for key in ("train", "val", "test") for i in split[key]}


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



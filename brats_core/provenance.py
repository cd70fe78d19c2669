"""Where a trained model came from, in one shape for every model family.

Every segmenter exposes ``.provenance`` (a :class:`Provenance`), read from its checkpoint: the cases it was
trained and tuned on (``brats compare --use-shipped`` refuses a model that has seen a test case), its
validation scores, how long training took and on what machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from brats_core.config import REGIONS
from brats_core.errors import BratsError


@dataclass(frozen=True)
class Provenance:
    """The training record of one checkpoint; ``None`` where the checkpoint did not record it."""

    train_cases: tuple[str, ...] = ()
    #: Cases used for validation or tuning (thresholds, early stopping): seen by the model, never test cases.
    val_cases: tuple[str, ...] = ()
    #: Scores measured without the test cases, by name: the family's own (validation or leave-one-out Dice, e.g.
    #: ``val_mean_dice``, ``loo_WT_dice``) and, for final checkpoints, the CV's out-of-fold ones (``cv_*``, see
    #: :func:`cv_scores`).
    cv_scores: Mapping[str, float] | None = None
    train_seconds: float | None = None
    hardware: str | None = None
    #: ISO date the checkpoint was written.
    created: str | None = None

    @property
    def seen_cases(self) -> tuple[str, ...]:
        """Every case the checkpoint was trained or tuned on."""
        return (*self.train_cases, *self.val_cases)


def this_machine() -> str:
    """Platform and CPU count of the running machine, for :attr:`Provenance.hardware`."""
    return f"{platform.platform()}, {os.cpu_count()} CPUs"


def today() -> str:
    return date.today().isoformat()


def summary_scores(summary: Mapping) -> dict[str, float]:
    """Out-of-fold scores from a pooled harness summary (``summary.json`` that ``brats_core.evaluation.write_reports`` writes over all the
    folds): mean and sd of Dice and HD95 per region and the number of cases, as
    ``{"cv_WT_dice_mean": ..., "cv_n_cases": 27.0}``. Raises KeyError/TypeError/ValueError on another shape."""
    scores = {f"cv_{r}_{m}_{s}": float(summary[r][m][s]) for r in REGIONS for m in ("dice", "hd95") for s in ("mean", "sd")}
    scores["cv_n_cases"] = float(summary["n_cases"])
    return scores


def cv_scores(summary_path: Path | str) -> dict[str, float]:
    """:func:`summary_scores` of one model's pooled ``summary.json`` of a cross-validation (``brats compare --folds
    K`` writes ``<out>/compare/<model>/summary.json``).

    Raises :class:`BratsError` naming the file when it is missing or is not such a summary.
    """
    path = Path(summary_path)
    try:
        return summary_scores(json.loads(path.read_text()))
    except FileNotFoundError:
        raise BratsError(f"{path}: no cross-validation summary (run `brats compare --folds 5` first)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BratsError(f"{path}: not a cross-validation summary of the harness ({type(exc).__name__}: {exc})") from None


def compare_cv(cv_out: Path | str, model: str) -> tuple[dict[str, float], list[Path]]:
    """The out-of-fold scores (:func:`summary_scores`) of ``model`` in the ``brats compare --folds K --out
    CV_OUT`` run at ``cv_out``, and its ``fold_<k>`` folders, checked to make one cross-validation: folds
    ``fold_1`` to ``fold_K`` whose test cases are disjoint and are exactly the cases of the pooled report
    ``compare/<model>/per_case.csv``. A test-split run (one report, no folds) or folders of two runs mixed (a
    leftover ``fold_3`` beside a 2-fold run) raise :class:`BratsError` saying which."""
    import csv

    from brats_core.split import load_split

    work = Path(cv_out) / "compare"
    folds = sorted(work.glob("fold_*"), key=lambda p: int(p.name.split("_")[-1]) if p.name[5:].isdigit() else -1)
    rerun = f"run `brats compare --folds 5 --out {cv_out}` with this model"
    if len(folds) < 2:
        raise BratsError(f"{work}: no fold_<k> folders of a cross-validation; {rerun}")
    if [p.name for p in folds] != [f"fold_{k}" for k in range(1, len(folds) + 1)]:
        raise BratsError(f"{work}: fold folders {', '.join(p.name for p in folds)} are not fold_1 to fold_{len(folds)}")
    tests = [c for fold in folds for c in load_split(fold / "split.json")["test"]]
    if len(set(tests)) != len(tests):
        raise BratsError(f"{work}: the test cases of {', '.join(p.name for p in folds)} overlap: folders of two "
                         f"compare runs are mixed; {rerun} into a new folder")
    report = work / model / "per_case.csv"
    try:
        with open(report, newline="") as handle:
            pooled = [row["case_id"] for row in csv.DictReader(handle)]
    except (OSError, KeyError, csv.Error) as exc:
        raise BratsError(f"{report}: no pooled out-of-fold report of {model} ({exc}); {rerun}") from None
    if sorted(pooled) != sorted(tests):
        raise BratsError(f"{report} holds {len(pooled)} case(s), not the {len(tests)} test cases of the "
                         f"{len(folds)} folds: it is not these folds' pooled report (a test-split run?); {rerun}")
    return cv_scores(work / model / "summary.json"), folds


def cv_record(cv: Path | str) -> dict:
    """What a final checkpoint records of the CV whose reports are in folder ``cv`` (a deep model's
    ``<out>/<model>/cv``): ``{"cases", "scores", "scores_without_postprocess", "postprocess_tuning"}``.

    ``scores`` (mean, sd, median of Dice and HD95 per region) are those of the served configuration, the
    out-of-fold predictions with the tuned post-processing (``postprocessed/summary.json``); the tuning report is
    ``postprocess.json``. Missing files raise FileNotFoundError, other shapes KeyError/TypeError/ValueError.
    """
    cv = Path(cv)
    raw = json.loads((cv / "summary.json").read_text())
    served = json.loads((cv / "postprocessed" / "summary.json").read_text())
    tuning = json.loads((cv / "postprocess.json").read_text())
    if served["n_cases"] != raw["n_cases"]:
        raise ValueError(f"{cv}: postprocessed/summary.json holds {served['n_cases']} cases, summary.json {raw['n_cases']}")

    def scores(summary: Mapping) -> dict:
        return {r: {m: dict(summary[r][m]) for m in ("dice", "hd95")} for r in REGIONS}

    return {"cases": raw["n_cases"], "scores": scores(served), "scores_without_postprocess": scores(raw),
            "postprocess_tuning": tuning}


def add_final_options(parser: argparse.ArgumentParser, all_cases_help: str, cv_help: str) -> None:
    """``--all-cases`` and ``--cv OUT`` of a family's training command: a final checkpoint fitted on every case,
    which records the out-of-fold scores (and may take tuned values) of the cross-validation in ``OUT``."""
    parser.add_argument("--all-cases", action="store_true", help=all_cases_help)
    parser.add_argument("--cv", type=Path, help=cv_help)


def check_final_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through ``parser.error`` unless ``--all-cases`` and ``--cv`` are given together or not at all."""
    if args.all_cases != (args.cv is not None):
        parser.error("--all-cases and --cv go together: a final checkpoint records the scores of its cross-validation")

"""Cross-validation of a deep model from the slice cache alone, in time-boxed calls that resume.

    python -m Deep_Learning_Model.cv train --from-cache C --model unet --out runs/cv --time-limit 9 [-- --head softmax]
    python -m Deep_Learning_Model.cv predict --from-cache C --model sspp --out runs/cv --folds 1 2
    python -m Deep_Learning_Model.cv score --from-cache C --model unet --out runs/cv      # also: --model fusion
    python -m Deep_Learning_Model.cv score --from-cache C --model fusion --out runs/seeds --members A/unet B/unet
    python -m Deep_Learning_Model.cv final --from-cache C --model unet --out runs/cv --time-limit 9
    python -m Deep_Learning_Model.cv all --from-cache C --out runs/cv --time-limit 8.5 --parallel 6 [--no-score]

Made for a lent GPU without NIfTI files (only the cache travels, ``brats_core.transport``) and with a limit per
call: the folds are those of ``brats compare --folds 5`` (:func:`brats_core.split.fold_splits` of ``--split``,
default ``splits/brats_dev.json``, seed 0: validation cases from the training folds), written once as
``<out>/splits/fold_<k>.json``, and the final split ``<out>/splits/all.json`` (every case trains).

- ``train`` trains the folds in order into ``<out>/<model>/fold_<k>``: a finished fold is skipped, a started one
  resumed (``last.pt``), and every run stops at the epoch boundary that fits ``--time-limit`` minutes (all folds
  together); call it again to go on. Options after ``--`` go to ``train.py`` (e.g. ablations ``--head softmax``).
- ``predict`` writes the out-of-fold predictions of ``--folds`` (default all; each must be trained) without
  scoring them: a fold's small prediction files can be kept as soon as it is trained, and its weights dropped
  (a CV spread over machines or sessions that keep nothing else); ``score`` scores them later as they are.
- ``score`` predicts each finished fold's test cases from the cache (the served predictor: restore to the
  original grid, thresholds, TTA with ``--tta``) into ``<out>/<model>/oof``, scores them with the shared harness
  and tunes the post-processing on them (:mod:`Deep_Learning_Model.cv_oof`); predictions already there are
  scored as they are (``--no-predict``: only those), so they can be made on one machine and scored on another.
  ``--model fusion`` averages ``<out>/unet`` and ``<out>/sspp``; ``--members`` names other model folders (each
  with ``fold_<k>/export.pt`` on the same folds), e.g. two training seeds of one network, fused into
  ``<out>/fusion``. An export that has seen a test case of its fold is refused.
- ``final`` trains on all cases with the folds' recipe, exporting a snapshot every epoch, and ships the snapshot
  of the median (rounded up) of the folds' best epochs as ``<out>/<model>/final/export.pt``: the same epoch of
  the same schedule that the folds were scored at, without waiting for them to train it. The export records the
  training cases, the CV summary and the tuned post-processing once the CV is scored.
- ``all`` does every step for unet and sspp (folds and final runs, ``--parallel N`` of them at once on one GPU;
  predictions of unet, sspp and their fusion, with and without test-time flips; scores unless ``--no-score``)
  within ``--time-limit``, skipping what is done: the same command, called again, goes on where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from brats_core.allocator import keep_freed_memory
from brats_core.config import DEFAULT_SPLIT, REGIONS, REPO_ROOT
from brats_core.errors import BratsError
from brats_core.split import all_cases_split, fold_splits, load_split, save_split
from Deep_Learning_Model import train as train_script
from Deep_Learning_Model.cv_oof import (
    CV_MODELS,
    cv_dir,
    fold_numbers,
    predict_folds,
    record_cv,
    score_folds,
    score_predictions,
)
from Deep_Learning_Model.export import read_export
from Deep_Learning_Model.fusion import FUSED
from Deep_Learning_Model.serialization import save_atomic
from Deep_Learning_Model.training.distributed import DistContext
from Deep_Learning_Model.training.loop import snapshot_path

#: The final run's own export (its last epoch); ``export.pt`` beside it is the snapshot the CV chose.
FINAL_RUN_EXPORT = "last_epoch_export.pt"


def write_splits(out: Path, split_path: Path = DEFAULT_SPLIT, k: int = 5, seed: int = 0) -> Path:
    """``<out>/splits/``: ``fold_<k>.json`` (compare's folds of ``split_path``) and ``all.json`` (every case
    trains), written on the first call; later calls (resuming) keep the files they find."""
    folder = out / "splits"
    if not (folder / "all.json").is_file():
        split = load_split(split_path)
        for f, fold in enumerate(fold_splits(split, k, seed), start=1):
            save_split(fold, folder / f"fold_{f}.json")
        save_split(all_cases_split(split, f"Final models: every case of {split_path.name} trains; epochs chosen "
                                          f"from the {k}-fold CV (fold_*.json beside this file)."), folder / "all.json")
    return folder


def _finished(run_dir: Path) -> bool:
    """Trained to its last epoch: ``train.py`` writes the summary after the export, and a run brought back
    from the GPU without its weights (``cv.tgz``) still counts as trained."""
    summary = run_dir / "train_summary.json"
    if not summary.is_file():
        return False
    data = json.loads(summary.read_text())
    return data["epochs_trained"] >= data["epochs"]


def _train(run_dir: Path, options: dict, deadline: float, export: str = "export.pt") -> bool:
    """Start or resume the run in ``run_dir`` until ``deadline``; True when it has finished."""
    minutes = (deadline - time.monotonic()) / 60.0
    if minutes <= 0.5:
        return False
    where = {k: options[k] for k in ("from_cache", "device") if k in options}
    if (run_dir / "last.pt").is_file():
        overrides = {"resume": str(run_dir / "last.pt"), "out": str(run_dir), "export": str(run_dir / export),
                     **where}
    else:
        overrides = {**options, "out": str(run_dir), "export": str(run_dir / export)}
    train_script.run({**overrides, "time_limit": minutes}, DistContext())
    return _finished(run_dir)


def _job(job: tuple) -> bool:
    """One training in a worker process of ``--parallel``: its threads share the cores, its log goes to
    ``<run>/train.log``."""
    run_dir, options, deadline, export, parallel = job
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // parallel))
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "a") as log, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
        try:
            return _train(run_dir, options, deadline, export)
        except Exception:  # noqa: BLE001 - a failed run is logged as its own and must not stop the others
            traceback.print_exc(file=log)
            return False


def _jobs(model: str, out: Path, options: dict, folds: list[int], splits: Path, final: bool) -> list[tuple]:
    """``(run folder, options, export name)`` of the folds (and the final run) of ``model``."""
    jobs = [(out / model / f"fold_{k}", {**options, "model": model, "split": str(splits / f"fold_{k}.json")},
             "export.pt") for k in folds]
    if final:
        jobs.append((out / model / "final", {**options, "model": model, "split": str(splits / "all.json"),
                                             "snapshot_every": 1}, FINAL_RUN_EXPORT))
    return jobs


def run_trainings(jobs: list[tuple], minutes: float, parallel: int = 1) -> list[bool]:
    """Train (or go on with) ``jobs`` until ``minutes`` have passed: in order in this process, or ``parallel``
    at a time in worker processes (several small trainings share one GPU better than one runs alone)."""
    deadline = time.monotonic() + 60.0 * minutes
    done = [_finished(run_dir) for run_dir, _, _ in jobs]
    todo = [n for n, finished in enumerate(done) if not finished]
    if parallel <= 1:
        for n in todo:
            run_dir, options, export = jobs[n]
            done[n] = _train(run_dir, options, deadline, export)
            if not done[n]:
                break
        return done
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    with ProcessPoolExecutor(min(parallel, len(todo)) or 1, mp_context=context) as pool:
        work = [(*jobs[n][:2], deadline, jobs[n][2], parallel) for n in todo]
        for n, finished in zip(todo, pool.map(_job, work), strict=True):
            done[n] = finished
    return done


def train_folds(model: str, out: Path, options: dict, minutes: float, folds: list[int],
                splits: Path) -> list[int]:
    """Train (or go on with) ``folds`` in order until ``minutes`` have passed; returns the folds finished."""
    done = run_trainings(_jobs(model, out, options, folds, splits, final=False), minutes)
    return [k for k, finished in zip(folds, done, strict=True) if finished]


def fold_best_epochs(model: str, out: Path, splits: Path) -> list[int]:
    """The best (validation) epoch of each fold of ``model``."""
    best = []
    for k in fold_numbers(splits):
        path = out / model / f"fold_{k}" / "train_summary.json"
        if not path.is_file():
            raise BratsError(f"{path}: fold {k} has no training summary; train the folds first")
        best.append(int(json.loads(path.read_text())["best_epoch"]))
    return best


def choose_final(model: str, out: Path, splits: Path) -> Path:
    """Ship the final run's snapshot at the median (rounded up) of the folds' best epochs as
    ``<out>/<model>/final/export.pt``, with the final run's provenance; the CV is recorded too when it is
    scored already."""
    run_dir = out / model / "final"
    best = fold_best_epochs(model, out, splits)
    epoch = int(np.ceil(statistics.median(best)))
    snapshot = snapshot_path(run_dir, epoch)
    if not snapshot.is_file():
        raise BratsError(f"{snapshot}: the final run has no snapshot of epoch {epoch}; train it with the folds' "
                         "recipe (cv final)")
    payload, run = read_export(snapshot), read_export(run_dir / FINAL_RUN_EXPORT)
    payload["info"] = {**run["info"], "best_epoch": epoch, "epochs_trained": epoch,
                       "epoch_choice": f"median (rounded up) of the folds' best epochs {best}"}
    export = save_atomic(payload, run_dir / "export.pt")
    if (cv_dir(out, model) / "summary.json").is_file():
        record_cv(export, model, out)
    return export


def train_final(model: str, out: Path, options: dict, minutes: float, splits: Path) -> bool:
    """Train (or go on with) the final run; once it and the folds are trained, choose its export."""
    if (out / model / "final" / "export.pt").is_file():
        return True
    fold_best_epochs(model, out, splits)  # the folds must be trained: fail before training anything
    job = _jobs(model, out, options, [], splits, final=True)
    if not run_trainings(job, minutes)[0]:
        return False
    choose_final(model, out, splits)
    return True


def run_all(out: Path, cache: Path, options: dict, minutes: float, splits: Path, device: str | None = None,
            jobs: int = 1, parallel: int = 1, score: bool = True) -> str:
    """Every step for unet and sspp within ``minutes``, skipping what is done; returns where it stands.

    Order: the folds and final runs of unet and sspp (``parallel`` at a time), the final exports, the
    out-of-fold predictions of unet, sspp and fusion, then those with test-time flips; the scores last."""
    deadline = time.monotonic() + 60.0 * minutes
    folds = fold_numbers(splits)
    trainings = [job for model in FUSED for job in _jobs(model, out, options, folds, splits, final=True)]
    done = run_trainings(trainings, minutes, parallel)
    if not all(done):
        left = ", ".join(str(run_dir) for (run_dir, _, _), finished in zip(trainings, done, strict=True)
                         if not finished)
        return f"trainings not finished: {left} (a run that failed says why in its train.log); call again"
    for model in FUSED:
        if not (out / model / "final" / "export.pt").is_file():
            choose_final(model, out, splits)
    for tta in (False, True):
        for model in CV_MODELS:
            if deadline - time.monotonic() < 60:
                return "out of time while predicting; call again"
            predict_folds(model, out, cache, splits, tta, device)
    if not score:
        return "done: trainings, final models and out-of-fold predictions (not scored: --no-score)"
    for tta in (False, True):
        for model in CV_MODELS:
            if not (cv_dir(out, model, tta) / "summary.json").is_file():
                score_predictions(model, out, cache, splits, tta, jobs)
    return "done: folds, scores (with and without test-time flips) and final models of unet and sspp"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    keep_freed_memory()
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="python -m Deep_Learning_Model.cv", description=__doc__.splitlines()[0],
        epilog="Arguments after a lone -- go to every training run (train.py), e.g. `... all --from-cache C -- "
               "--epochs 27` or `-- --base-width 16 --seed 1`; they become part of the folds' recipe.")
    parser.add_argument("command", choices=("train", "predict", "score", "final", "all"))
    parser.add_argument("--from-cache", required=True, type=Path, help="slice cache folder (<root>/<key>)")
    parser.add_argument("--model", choices=CV_MODELS, help="required except with all")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "runs" / "cv")
    parser.add_argument("--preset", default="cv27", help="training preset (default cv27)")
    parser.add_argument("--time-limit", type=float, default=9.0, metavar="MINUTES", help="train/final (default 9)")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="split whose 5 folds are the CV "
                        "(default splits/brats_dev.json); written as <out>/splits/fold_<k>.json and all.json")
    parser.add_argument("--splits", type=Path, help="a folder of fold_<k>.json and all.json to use instead")
    parser.add_argument("--folds", type=int, nargs="*", help="train, predict: which folds (default all)")
    parser.add_argument("--tta", action="store_true", help="predict, score: test-time flips")
    parser.add_argument("--no-predict", action="store_true", help="score: only the predictions already written")
    parser.add_argument("--members", type=Path, nargs="+", metavar="DIR", help="score --model fusion: fuse these "
                        "model folders (each holding fold_<k>/export.pt) instead of <out>/unet and <out>/sspp")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--jobs", type=int, default=1, help="score: processes computing the metrics")
    parser.add_argument("--parallel", type=int, default=1, help="all: trainings at once (default 1)")
    parser.add_argument("--no-score", action="store_true", help="all: stop after the predictions")
    args = parser.parse_args(argv)
    if args.model is None and args.command != "all":
        parser.error(f"{args.command} needs --model")
    if args.members and (args.command not in ("score", "predict") or args.model != "fusion" or args.no_predict):
        parser.error("--members goes with score --model fusion (predicting) or predict --model fusion")
    options = {"from_cache": str(args.from_cache), "preset": args.preset,
               **vars(train_script.build_parser().parse_args(extra))}
    if args.device:
        options["device"] = args.device
    try:
        args.splits = args.splits or write_splits(args.out, args.split)
        if args.command == "all":
            status = run_all(args.out, args.from_cache, options, args.time_limit, args.splits, args.device,
                             args.jobs, args.parallel, not args.no_score)
            print(f"cv all: {status}")
            return 0
        if args.command == "predict":
            folder = predict_folds(args.model, args.out, args.from_cache, args.splits, args.tta, args.device,
                                   args.members, args.folds)
            print(f"cv predict {args.model}: {len(list(folder.glob('*.npz')))} out-of-fold predictions in {folder}")
            return 0
        if args.command == "score":
            if args.no_predict:
                result = score_predictions(args.model, args.out, args.from_cache, args.splits, args.tta, args.jobs)
            else:
                result = score_folds(args.model, args.out, args.from_cache, args.splits, args.tta, args.device,
                                     args.jobs, args.members)
            print(json.dumps({k: result[k] for k in ("postprocess",)} | {
                "cv_dice": {r: result["summary"][r]["dice"]["mean"] for r in REGIONS},
                "cv_dice_postprocessed": {r: result["postprocessed"][r]["dice"]["mean"] for r in REGIONS}}))
            return 0
        if args.model == "fusion":
            raise BratsError("fusion is scored from the unet and sspp folds; train those")
        if args.command == "train":
            folds = args.folds or fold_numbers(args.splits)
            done = train_folds(args.model, args.out, options, args.time_limit, folds, args.splits)
            print(f"cv train {args.model}: folds finished {done} of {folds}")
            return 0
        finished = train_final(args.model, args.out, options, args.time_limit, args.splits)
        print(f"cv final {args.model}: {'finished' if finished else 'not finished; call again'}")
        return 0
    except BratsError as exc:
        print(f"cv: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

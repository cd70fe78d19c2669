"""Cross-validation of a deep model from the slice cache alone, in time-boxed calls that resume.

    python -m Deep_Learning_Model.cv train --from-cache C --model unet --out runs/cv --time-limit 9 [-- --head softmax]
    python -m Deep_Learning_Model.cv score --from-cache C --model unet --out runs/cv      # also: --model fusion
    python -m Deep_Learning_Model.cv final --from-cache C --model unet --out runs/cv --time-limit 9
    python -m Deep_Learning_Model.cv all --from-cache C --out runs/cv --time-limit 8.5    # all of it, resumable

Made for a lent GPU without NIfTI files (only the cache travels, ``brats_core.transport``) and with a limit per
call: the folds are those of ``brats compare --folds 5`` (:func:`brats_core.split.fold_splits` of ``--split``,
default ``splits/brats_dev.json``, seed 0: validation cases from the training folds), written once as
``<out>/splits/fold_<k>.json``, and the final split ``<out>/splits/all.json`` (every case trains).

- ``train`` trains the folds in order into ``<out>/<model>/fold_<k>``: a finished fold is skipped, a started one
  resumed (``last.pt``), and every run stops at the epoch boundary that fits ``--time-limit`` minutes (all folds
  together); call it again to go on. Options after ``--`` go to ``train.py`` (e.g. ablations ``--head softmax``).
- ``score`` predicts each finished fold's test cases from the cache (the served predictor: restore to the
  original grid, thresholds, TTA with ``--tta``) and scores them with the shared harness
  (:func:`brats_core.evaluation.evaluate_case` against the cached native-resolution labels, in the original
  voxel space). It writes ``<out>/<model>/cv/{per_case.csv,summary.json,summary.md}`` (``cv_tta`` with the
  flips) over all out-of-fold cases and ``postprocess.json``: the post-processing tuned on those predictions
  and the CV with it (``postprocessed/``).
- ``final`` trains on all cases for the median of the folds' best epochs, into ``<out>/<model>/final``; its
  export records the training cases, the CV summary and the tuned post-processing.
- ``all`` does every step for unet and sspp (folds, scores of unet, sspp and their fusion, final models, then the
  scores with test-time flips) within ``--time-limit``, skipping what is done: the same command, called again,
  goes on where the last call stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from brats_core.cache import open_cache
from brats_core.config import DEFAULT_SPLIT, REGIONS, REPO_ROOT
from brats_core.errors import BratsError
from brats_core.evaluation import evaluate_case, write_reports
from brats_core.postprocess import PostprocessConfig, apply_postprocess, tune_postprocess
from brats_core.preprocessing import Preprocessed
from brats_core.split import all_cases_split, fold_splits, load_split, save_split
from Deep_Learning_Model import train as train_script
from Deep_Learning_Model.export import read_export
from Deep_Learning_Model.fusion import FUSED, raw_segmenter
from Deep_Learning_Model.serialization import plain_data, save_atomic
from Deep_Learning_Model.training.distributed import DistContext


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


def fold_numbers(splits: Path) -> list[int]:
    """The ``k`` of every ``fold_<k>.json`` in ``splits``, in order."""
    numbers = sorted(int(p.stem.split("_")[1]) for p in splits.glob("fold_*.json"))
    if not numbers:
        raise BratsError(f"{splits}: no fold_<k>.json split files")
    return numbers


def _finished(run_dir: Path) -> bool:
    summary = run_dir / "train_summary.json"
    if not summary.is_file():
        return False
    data = json.loads(summary.read_text())
    return data["epochs_trained"] >= data["epochs"] and (run_dir / "export.pt").is_file()


def _train(run_dir: Path, options: dict, deadline: float) -> bool:
    """Start or resume the run in ``run_dir`` until ``deadline``; True when it has finished."""
    minutes = (deadline - time.monotonic()) / 60.0
    if minutes <= 0.5:
        return False
    where = {k: options[k] for k in ("from_cache", "device") if k in options}
    if (run_dir / "last.pt").is_file():
        overrides = {"resume": str(run_dir / "last.pt"), "out": str(run_dir), **where}
    else:
        overrides = {**options, "out": str(run_dir), "export": str(run_dir / "export.pt")}
    train_script.run({**overrides, "time_limit": minutes}, DistContext())
    return _finished(run_dir)


def train_folds(model: str, out: Path, options: dict, minutes: float, folds: list[int],
                splits: Path) -> list[int]:
    """Train (or go on with) ``folds`` until ``minutes`` have passed; returns the folds finished."""
    deadline = time.monotonic() + 60.0 * minutes
    done = []
    for k in folds:
        run_dir = out / model / f"fold_{k}"
        if _finished(run_dir) or _train(run_dir, {**options, "split": str(splits / f"fold_{k}.json")}, deadline):
            done.append(k)
        else:
            break
    return done


def _segmenter(model: str, out: Path, k: int, tta: bool, device: str | None):
    names = FUSED if model == "fusion" else (model,)
    exports = [out / name / f"fold_{k}" / "export.pt" for name in names]
    missing = [str(p) for p in exports if not p.is_file()]
    if missing:
        raise BratsError(f"fold {k} is not trained yet: {', '.join(missing)}")
    return raw_segmenter(exports, device, tta)


def cv_dir(out: Path, model: str, tta: bool = False) -> Path:
    """Where the CV reports of ``model`` go: ``<out>/<model>/cv``, or ``cv_tta`` with test-time flips."""
    return out / model / ("cv_tta" if tta else "cv")


def _evaluate(item: tuple) -> dict:
    labels, reference, spacing, case_id, extra = item
    return {**evaluate_case(labels, reference, spacing, case_id), **extra}


def score_folds(model: str, out: Path, cache: Path, splits: Path, tta: bool = False, device: str | None = None,
                jobs: int = 1) -> dict:
    """Out-of-fold predictions of every case from the cache, scored (``jobs`` processes compute the metrics);
    post-processing tuned on them."""
    oof = []
    folds = fold_numbers(splits)
    for k in folds:
        segmenter = _segmenter(model, out, k, tta, device)
        for entry in open_cache(cache, load_split(splits / f"fold_{k}.json")["test"]):
            if entry.native_labels is None:
                raise BratsError(f"{entry.path}: cached case without labels cannot be scored")
            pre = Preprocessed(np.asarray(entry.images, dtype=np.float32), None, np.asarray(entry.brain),
                               entry.geometry)
            start = time.perf_counter()
            labels = segmenter.predict_preprocessed(pre)
            extra = {"predict_seconds": time.perf_counter() - start, "fold": k}
            oof.append((labels, entry.original_labels(), entry.spacing, entry.case_id, extra))
    config, report = tune_postprocess([(p, r, s) for p, r, s, _, _ in oof])
    post = [(apply_postprocess(p, s, config), r, s, i, {}) for p, r, s, i, _ in oof]
    with ProcessPoolExecutor(max(jobs, 1)) as pool:
        rows, with_post = list(pool.map(_evaluate, oof)), list(pool.map(_evaluate, post))
    target = cv_dir(out, model, tta)
    summary = write_reports(rows, target, title=f"{model}: {len(folds)}-fold CV, {len(rows)} out-of-fold cases (cache)")
    post = write_reports(with_post, target / "postprocessed", title=f"{model}: CV with tuned post-processing")
    (target / "postprocess.json").write_text(json.dumps(plain_data(report, "tuning report"), indent=1) + "\n")
    return {"summary": summary, "postprocessed": post, "postprocess": config.to_dict()}


def final_epochs(model: str, out: Path, splits: Path) -> int:
    """The median (rounded up) of the folds' best epochs."""
    best = []
    for k in fold_numbers(splits):
        path = out / model / f"fold_{k}" / "train_summary.json"
        if not path.is_file():
            raise BratsError(f"{path}: fold {k} has no training summary; train the folds first")
        best.append(int(json.loads(path.read_text())["best_epoch"]))
    return int(np.ceil(statistics.median(best)))


def record_cv(export: Path, model: str, out: Path) -> None:
    """Write the CV summary (means and sds per region) and the tuned post-processing into ``export``."""
    cv = out / model / "cv"
    payload = read_export(export)
    summary = json.loads((cv / "summary.json").read_text())
    scores = {r: {m: summary[r][m] for m in ("dice", "hd95")} for r in REGIONS}
    tuning = json.loads((cv / "postprocess.json").read_text())
    payload["info"] = {**payload.get("info", {}), "cv": {"cases": summary["n_cases"], "scores": scores,
                                                          "postprocess_tuning": tuning}}
    payload["postprocess"] = PostprocessConfig.from_dict(tuning["chosen"]).to_dict()
    save_atomic(payload, export)


def train_final(model: str, out: Path, options: dict, deadline: float, splits: Path) -> bool:
    """Train (or go on with) the final model on ``splits/all.json``; record the CV in its export when done."""
    run_dir = out / model / "final"
    if not (run_dir / "last.pt").is_file():
        options = {"epochs": final_epochs(model, out, splits), **options}
    finished = _finished(run_dir) or _train(run_dir, {**options, "split": str(splits / "all.json")}, deadline)
    if finished and (out / model / "cv" / "summary.json").is_file() and "cv" not in read_export(
            run_dir / "export.pt").get("info", {}):
        record_cv(run_dir / "export.pt", model, out)
    return finished


def run_all(out: Path, cache: Path, options: dict, minutes: float, splits: Path,
            device: str | None = None, jobs: int = 1) -> str:
    """Every step for unet and sspp within ``minutes``, skipping what is done; returns where it stands.

    Order: the folds of unet then sspp, the CV of unet, sspp and fusion, the final models, then (an ablation
    row) the CV of the three with test-time flips."""
    deadline = time.monotonic() + 60.0 * minutes
    folds = fold_numbers(splits)
    for model in FUSED:
        left = (deadline - time.monotonic()) / 60.0
        if train_folds(model, out, {**options, "model": model}, left, folds, splits) != folds:
            return f"{model} folds not finished; call again"
    for model in (*FUSED, "fusion"):
        if not (cv_dir(out, model) / "summary.json").is_file():
            if deadline - time.monotonic() < 120:
                return "out of time before scoring; call again"
            score_folds(model, out, cache, splits, False, device, jobs)
    for model in FUSED:
        if not train_final(model, out, {**options, "model": model}, deadline, splits):
            return f"{model} final model not finished; call again"
    for model in (*FUSED, "fusion"):
        if not (cv_dir(out, model, tta=True) / "summary.json").is_file():
            if deadline - time.monotonic() < 120:
                return "done but the scores with test-time flips; call again for those"
            score_folds(model, out, cache, splits, True, device, jobs)
    return "done: folds, scores (with and without test-time flips) and final models of unet and sspp"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m Deep_Learning_Model.cv", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("train", "score", "final", "all"))
    parser.add_argument("--from-cache", required=True, type=Path, help="slice cache folder (<root>/<key>)")
    parser.add_argument("--model", choices=(*FUSED, "fusion"), help="required except with all")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "runs" / "cv")
    parser.add_argument("--preset", default="cv27", help="training preset (default cv27)")
    parser.add_argument("--time-limit", type=float, default=9.0, metavar="MINUTES", help="train/final (default 9)")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="split whose 5 folds are the CV "
                        "(default splits/brats_dev.json); written as <out>/splits/fold_<k>.json and all.json")
    parser.add_argument("--splits", type=Path, help="a folder of fold_<k>.json and all.json to use instead")
    parser.add_argument("--folds", type=int, nargs="*", help="train: which folds (default all)")
    parser.add_argument("--tta", action="store_true", help="score: test-time flips")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--jobs", type=int, default=1, help="score: processes computing the metrics")
    args = parser.parse_args(argv)
    if args.model is None and args.command != "all":
        parser.error(f"{args.command} needs --model")
    options = {"model": args.model, "from_cache": str(args.from_cache), "preset": args.preset,
               **vars(train_script.build_parser().parse_args(extra))}
    if args.device:
        options["device"] = args.device
    try:
        args.splits = args.splits or write_splits(args.out, args.split)
        if args.command == "all":
            options.pop("model")
            status = run_all(args.out, args.from_cache, options, args.time_limit, args.splits, args.device, args.jobs)
            print(f"cv all: {status}")
            return 0
        if args.command == "score":
            result = score_folds(args.model, args.out, args.from_cache, args.splits, args.tta, args.device,
                                 args.jobs)
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
        finished = train_final(args.model, args.out, options, time.monotonic() + 60.0 * args.time_limit, args.splits)
        print(f"cv final {args.model}: {'finished' if finished else 'not finished; call again'}")
        return 0
    except BratsError as exc:
        print(f"cv: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Out-of-fold predictions of a deep CV and their scores, as two steps that can run on different machines.

``predict_folds`` (where the GPU is) writes every fold's test cases, predicted by that fold's export from the
slice cache exactly as the served predictor would (restore to the original grid, thresholds, flips with
``tta``), as ``<out>/<model>/oof[_tta]/<case>.npz`` (uint8 labels in the original voxel space, the fold, the
seconds it took): small files that travel back. ``score_predictions`` (anywhere with the same cache) scores them
with the shared harness (:func:`brats_core.evaluation.evaluate_case`: 3D per case, WT/TC/ET Dice and HD95,
against the cached native-resolution labels), tunes the post-processing on them and writes the reports into
``<out>/<model>/cv[_tta]`` (``postprocessed/``: with the setting tuned on all cases, which a final model ships;
``postprocessed_nested/``: each fold with the setting tuned on the other folds' cases, the unflattered
figure); a final model already trained gets that CV recorded in its export.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from brats_core.cache import open_cache
from brats_core.errors import BratsError
from brats_core.evaluation import evaluate_case, write_reports
from brats_core.postprocess import PostprocessConfig, apply_postprocess, tune_postprocess
from brats_core.preprocessing import Preprocessed
from brats_core.provenance import cv_record
from brats_core.split import load_split
from Deep_Learning_Model.export import read_export
from Deep_Learning_Model.fusion import FUSED, raw_segmenter
from Deep_Learning_Model.serialization import plain_data, save_atomic

#: Every model a deep CV scores: the two networks and their fusion.
CV_MODELS = (*FUSED, "fusion")


def cv_dir(out: Path, model: str, tta: bool = False) -> Path:
    """Where the CV reports of ``model`` go: ``<out>/<model>/cv``, or ``cv_tta`` with test-time flips."""
    return out / model / ("cv_tta" if tta else "cv")


def oof_dir(out: Path, model: str, tta: bool = False) -> Path:
    """Where the out-of-fold label maps of ``model`` go: ``<out>/<model>/oof``, or ``oof_tta``."""
    return out / model / ("oof_tta" if tta else "oof")


def fold_numbers(splits: Path) -> list[int]:
    """The ``k`` of every ``fold_<k>.json`` in ``splits``, in order."""
    numbers = sorted(int(p.stem.split("_")[1]) for p in splits.glob("fold_*.json"))
    if not numbers:
        raise BratsError(f"{splits}: no fold_<k>.json split files")
    return numbers


def _fold_cases(splits: Path) -> list[tuple[int, list[str]]]:
    return [(k, list(load_split(splits / f"fold_{k}.json")["test"])) for k in fold_numbers(splits)]


def member_folders(model: str, out: Path, members: list[Path] | None = None) -> list[Path]:
    """The model folders (each holding ``fold_<k>/export.pt``) whose probabilities ``model`` averages:
    ``<out>/<model>`` itself, for fusion ``<out>/unet`` and ``<out>/sspp`` unless ``members`` names others (two
    training seeds of one network, say)."""
    if members and model != "fusion":
        raise BratsError(f"members are fused: give them with the fusion model, not {model}")
    if members and len(members) < 2:
        raise BratsError(f"a fusion needs at least two member folders, got {', '.join(map(str, members))}")
    return list(members) if members else [out / name for name in (FUSED if model == "fusion" else (model,))]


def _check_members(model: str, out: Path, members: list[Path] | None) -> None:
    """Keep one fusion's predictions per ``<out>/fusion``: members given are recorded in ``members.json`` there,
    and predictions of other members (or of the default pair) in the same place are refused, since they would be
    scored together."""
    if model != "fusion":
        return
    folder = out / "fusion"
    record = folder / "members.json"
    names = [str(m) for m in members] if members else None
    saved = json.loads(record.read_text()) if record.is_file() else None
    if saved == names:
        return
    if saved is None and not any(folder.glob("oof*/*.npz")):
        folder.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(names, indent=1) + "\n")
        return
    default = f"{out / 'unet'} and {out / 'sspp'}"
    raise BratsError(f"{folder} holds the fusion of {', '.join(saved) if saved else default}, not of "
                     f"{', '.join(names) if names else default}; give another --out")


def _segmenter(folders: list[Path], k: int, cases: list[str], tta: bool, device: str | None):
    exports = [folder / f"fold_{k}" / "export.pt" for folder in folders]
    missing = [str(p) for p in exports if not p.is_file()]
    if missing:
        raise BratsError(f"fold {k} is not trained yet: {', '.join(missing)}")
    segmenter = raw_segmenter(exports, device, tta)
    seen = sorted(set(cases) & set(segmenter.provenance.seen_cases))
    if seen:  # another run's folds, or another split: its "out-of-fold" cases would not be
        raise BratsError(f"fold {k}: {', '.join(map(str, exports))} trained or validated on {', '.join(seen)}, "
                         f"a test case of this fold")
    return segmenter


def predict_folds(model: str, out: Path, cache: Path, splits: Path, tta: bool = False,
                  device: str | None = None, members: list[Path] | None = None,
                  folds: list[int] | None = None) -> Path:
    """Write the out-of-fold label map of every test case not written yet (of ``folds`` only, when given: a
    fold can be predicted as soon as it is trained); returns the folder. Every export must not have seen its
    fold's test cases (BratsError naming them)."""
    known = fold_numbers(splits)
    unknown = sorted(set(folds or ()) - set(known))
    if unknown:  # refused before anything is written
        raise BratsError(f"{splits}: no fold {', '.join(map(str, unknown))} (folds {', '.join(map(str, known))})")
    folders = member_folders(model, out, members)
    _check_members(model, out, members)
    folder = oof_dir(out, model, tta)
    folder.mkdir(parents=True, exist_ok=True)
    for k, cases in _fold_cases(splits):
        if folds and k not in folds:
            continue
        todo = [c for c in cases if not (folder / f"{c}.npz").is_file()]
        if not todo:
            continue
        segmenter = _segmenter(folders, k, cases, tta, device)
        for entry in open_cache(cache, todo):
            pre = Preprocessed(np.asarray(entry.images, dtype=np.float32), None, np.asarray(entry.brain),
                               entry.geometry)
            start = time.perf_counter()
            labels = segmenter.predict_preprocessed(pre)
            seconds = time.perf_counter() - start
            tmp = folder / f"{entry.case_id}.tmp.npz"
            np.savez_compressed(tmp, labels=np.asarray(labels, dtype=np.uint8), fold=k, seconds=seconds)
            tmp.replace(folder / f"{entry.case_id}.npz")
    return folder


def _evaluate(item: tuple) -> dict:
    labels, reference, spacing, case_id, extra = item
    return {**evaluate_case(labels, reference, spacing, case_id), **extra}


def _load_oof(model: str, out: Path, cache: Path, splits: Path, tta: bool) -> list[tuple]:
    folder = oof_dir(out, model, tta)
    cases = [c for _, fold in _fold_cases(splits) for c in fold]
    missing = [c for c in cases if not (folder / f"{c}.npz").is_file()]
    if missing:
        raise BratsError(f"{folder}: no out-of-fold prediction of {', '.join(missing)}; run the predictions first")
    oof = []
    for entry in open_cache(cache, cases):
        if entry.native_labels is None:
            raise BratsError(f"{entry.path}: cached case without labels cannot be scored")
        with np.load(folder / f"{entry.case_id}.npz") as saved:
            labels, fold, seconds = saved["labels"], int(saved["fold"]), float(saved["seconds"])
        reference = entry.original_labels()
        if labels.shape != reference.shape:
            raise BratsError(f"{folder / entry.case_id}.npz: labels {labels.shape} but the case is {reference.shape}")
        oof.append((labels, reference, entry.spacing, entry.case_id, {"predict_seconds": seconds, "fold": fold}))
    return oof


def score_predictions(model: str, out: Path, cache: Path, splits: Path, tta: bool = False, jobs: int = 1) -> dict:
    """Score the out-of-fold label maps (``jobs`` processes compute the metrics), tune the post-processing on
    them, write the reports; record the CV in ``<out>/<model>/final/export.pt`` when it exists (without flips)."""
    oof = _load_oof(model, out, cache, splits, tta)
    config, report = tune_postprocess([(p, r, s) for p, r, s, _, _ in oof], folds=[e["fold"] for *_, e in oof])
    post = [(apply_postprocess(p, s, config), r, s, i, {}) for p, r, s, i, _ in oof]
    nested = {int(k): PostprocessConfig.from_dict(v) for k, v in report["nested"]["chosen"].items()}
    fair = [(apply_postprocess(p, s, nested[e["fold"]]), r, s, i, {"fold": e["fold"]}) for p, r, s, i, e in oof]
    with ProcessPoolExecutor(max(jobs, 1)) as pool:
        rows, with_post, with_fair = (list(pool.map(_evaluate, items)) for items in (oof, post, fair))
    target = cv_dir(out, model, tta)
    folds = len(fold_numbers(splits))
    summary = write_reports(rows, target, title=f"{model}: {folds}-fold CV, {len(rows)} out-of-fold cases (cache)")
    post = write_reports(with_post, target / "postprocessed", title=f"{model}: CV with tuned post-processing")
    write_reports(with_fair, target / "postprocessed_nested",
                  title=f"{model}: CV with the post-processing tuned on the other folds' cases (nested)")
    (target / "postprocess.json").write_text(json.dumps(plain_data(report, "tuning report"), indent=1) + "\n")
    final = out / model / "final" / "export.pt"
    if not tta and final.is_file():
        record_cv(final, model, out)
    return {"summary": summary, "postprocessed": post, "postprocess": config.to_dict()}


def score_folds(model: str, out: Path, cache: Path, splits: Path, tta: bool = False, device: str | None = None,
                jobs: int = 1, members: list[Path] | None = None) -> dict:
    """Predict what is not predicted yet, then score: both steps on this machine."""
    predict_folds(model, out, cache, splits, tta, device, members)
    return score_predictions(model, out, cache, splits, tta, jobs)


def record_cv(export: Path, model: str, out: Path) -> None:
    """Write the CV (:func:`brats_core.provenance.cv_record`: the post-processed out-of-fold scores, the raw ones
    and the tuning report) and the tuned post-processing into ``export``."""
    cv = cv_record(cv_dir(out, model))
    payload = read_export(export)
    payload["info"] = {**payload.get("info", {}), "cv": cv}
    payload["postprocess"] = PostprocessConfig.from_dict(cv["postprocess_tuning"]["chosen"]).to_dict()
    save_atomic(payload, export)

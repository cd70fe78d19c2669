"""Train the per-voxel classifiers on a split's training cases, tune them on its validation cases, save
the checkpoints and score them on its test cases with the shared harness.

1. Atlas: the naive model's region counts over the training cases (``Naive_Model.naive_mean_model``).
2. Samples: ``--samples-per-case`` brain voxels per training case, balanced over the labels 0/1/2/4; their
   atlas prior is leave-one-out (the atlas without the voxel's own case), as a test case never is in the atlas.
   Steps 1 and 2 share one pass over the training cases: each is loaded and preprocessed once.
3. Fit ridge, tree and KNN (KNN on at most ``--knn-max-samples`` of the samples, stratified).
4. Validation cases: per classifier the tumour threshold with the best mean Dice (WT, TC, ET; on the
   preprocessed grid), then per model the smallest tumour component kept, as a fraction of the largest (0 = no
   post-processing), measured in the original grid.
5. Save ``checkpoints/<model>.joblib``; evaluate on the test cases into ``results/<model>/`` (the training
   record, e.g. ``fit_seconds``, goes into its ``summary.json``).

    python Machine_Learning_Model/train.py --model all        # or: brats train ml --model all
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.base import clone
from tqdm import tqdm

from brats_core.cases import CaseFiles, load_case, open_cases
from brats_core.config import DEFAULT_SPLIT, LABELS, REGIONS, RESULTS_DIR, SHARED_DATA_DIR, PreprocessConfig
from brats_core.errors import BratsError
from brats_core.files import check_output_paths
from brats_core.helptext import PlainHelpFormatter, description
from brats_core.labels import labels_to_regions
from brats_core.metrics import dice
from brats_core.preprocessing import bounding_box, brain_mask, preprocess
from brats_core.provenance import add_final_options, check_final_options, this_machine, today
from brats_core.split import split_case_files
from Machine_Learning_Model.features import FeatureConfig, atlas_prior, image_features, prior_features
from Machine_Learning_Model.models import (
    CHECKPOINT_DIR,
    MODEL_NAMES,
    VoxelSegmenter,
    build_estimator,
    drop_small_components,
    members_of,
)
from Naive_Model.naive_mean_model import AtlasCounts

#: Post-processing candidates: drop tumour components smaller than this fraction of the largest one
#: (0 keeps everything, 1 keeps the largest only).
MIN_COMPONENT_FRACTIONS: tuple[float, ...] = (0.0, 0.01, 0.05, 0.2, 1.0)
#: Candidate tumour thresholds: these quantiles of the validation margins, plus 0 (the plain argmax).
THRESHOLD_QUANTILES = np.linspace(0.0, 0.5, 501)
#: Preprocessing of the shipped checkpoints: 96 pixels in-plane (about 2 mm) keeps KNN under 10 s a case.
DEFAULT_PREPROCESS = PreprocessConfig(size=96)


def sample_index(labels: np.ndarray, brain: np.ndarray, per_case: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of up to ``per_case // 4`` brain voxels of each label (all of them if fewer), sorted."""
    labels, brain = labels.reshape(-1), brain.reshape(-1)
    picks = []
    for label in LABELS:
        candidates = np.flatnonzero(brain & (labels == label))
        picks.append(rng.choice(candidates, min(per_case // len(LABELS), candidates.size), replace=False))
    return np.sort(np.concatenate(picks))


def _bar(items: list, desc: str, progress: bool) -> tqdm:
    """A progress bar (stderr, removed when done) over the cases of one slow step."""
    return tqdm(items, desc=desc, unit="case", leave=False, disable=not progress)


def training_samples(files: list[CaseFiles], preprocess_config: PreprocessConfig, feature_config: FeatureConfig,
                     per_case: int, seed: int, progress: bool = True) -> tuple[AtlasCounts, np.ndarray, np.ndarray]:
    """The atlas of the training cases and the features and labels of their sampled voxels.

    Each case is loaded once: its regions are counted into the atlas and its samples' image features computed;
    the samples' atlas prior, leave-one-out (the atlas without their own case), is added once every case is
    counted, from the case's seg kept cropped to its tumour. ``progress``: a bar per pass over the cases.
    """
    rng = np.random.default_rng(seed)
    atlas, sampled = AtlasCounts(), []
    for case_files in _bar(files, "features: load, preprocess, sample", progress):
        case = load_case(case_files)
        atlas.add(case)
        pre = preprocess(case, preprocess_config)
        index = sample_index(pre.labels, pre.brain, per_case, rng)
        bounds = bounding_box(case.seg) or (0, 0, 0, 0, 0, 0)
        box = tuple(slice(start, stop) for start, stop in zip(bounds[::2], bounds[1::2], strict=True))
        sampled.append((image_features(pre, index, feature_config), pre.labels.reshape(-1)[index], index,
                        pre.geometry, box, case.seg[box].copy()))
    if atlas.n_cases < 2:
        raise BratsError(f"the ML models need at least two training cases, got {atlas.n_cases}")
    features, targets = [], []
    seg = np.zeros(atlas.counts.shape[1:], dtype=np.uint8)
    for image, target, index, geometry, box, tumour in _bar(sampled, "features: atlas prior", progress):
        seg[...] = 0
        seg[box] = tumour
        prior = atlas_prior(atlas.leave_one_out_levels(labels_to_regions(seg)), geometry)
        features.append(np.concatenate([image, prior_features(prior, index)], axis=1))
        targets.append(target)
    return atlas, np.concatenate(features), np.concatenate(targets)


def stratified_subset(targets: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` samples keeping the label proportions."""
    if len(targets) <= limit:
        return np.arange(len(targets))
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(targets == label), round(limit * np.mean(targets == label)), replace=False)
            for label in np.unique(targets)]
    return np.sort(np.concatenate(keep))


def _region_dice_curves(scores: np.ndarray, ref: np.ndarray, ref_sizes: np.ndarray,
                        candidates: np.ndarray) -> np.ndarray:
    """Dice (3 regions x candidates) of ``scores_to_labels(scores, t)`` for every candidate threshold t.

    Sorting the voxels by margin makes every threshold one prefix, so overlaps are cumulative sums.
    """
    margin = scores[:, 0] - scores[:, 1:].max(axis=1)
    tumour_label = np.asarray(LABELS[1:])[scores[:, 1:].argmax(axis=1)]
    order = np.argsort(margin, kind="stable")
    cut = np.searchsorted(margin[order], candidates, side="left")
    curves = np.empty((len(REGIONS), len(candidates)))
    for r, values in enumerate(REGIONS.values()):
        predicted = np.isin(tumour_label[order], values)
        overlap = predicted & np.isin(ref[order], values)
        size = np.concatenate([[0], np.cumsum(predicted)])[cut]
        hits = np.concatenate([[0], np.cumsum(overlap)])[cut]
        total = size + ref_sizes[r]
        curves[r] = np.where(total == 0, 1.0, 2.0 * hits / np.maximum(total, 1))
    return curves


def tune_threshold(validation: list[dict], member: str) -> tuple[float, float]:
    """The tumour threshold of ``member`` with the best mean Dice over regions and validation cases."""
    margins = np.concatenate([v["scores"][member][:, 0] - v["scores"][member][:, 1:].max(axis=1) for v in validation])
    candidates = np.unique(np.concatenate([np.quantile(margins[np.isfinite(margins)], THRESHOLD_QUANTILES), [0.0]]))
    mean = np.mean([_region_dice_curves(v["scores"][member], v["ref"], v["ref_sizes"], candidates).mean(axis=0)
                    for v in validation], axis=0)
    best = int(np.argmax(mean))
    return float(candidates[best]), float(mean[best])


def _validation_case(case_files: CaseFiles, probe: VoxelSegmenter) -> dict:
    """What tuning needs of one validation case: the members' scores of its brain voxels and its reference, on
    the grid and in the original grid (not the case itself: its images are 16 bytes a voxel)."""
    case = load_case(case_files)
    if case.seg is None:
        raise BratsError(f"validation case '{case.case_id}' has no segmentation")
    pre, index, features = probe.prepare(case)
    ref_grid = pre.labels.reshape(-1)
    return {
        "geometry": pre.geometry, "index": index, "scores": probe.member_scores(features), "ref": ref_grid[index],
        "ref_sizes": np.array([np.isin(ref_grid, values).sum() for values in REGIONS.values()]),
        "brain": brain_mask(case.images), "ref_regions": labels_to_regions(case.seg),
    }


def _mean_region_dice(labels: np.ndarray, ref_regions: np.ndarray) -> float:
    return float(np.mean([dice(p, r) for p, r in zip(labels_to_regions(labels), ref_regions, strict=True)]))


def tune_postprocessing(segmenter: VoxelSegmenter, validation: list[dict]) -> dict[float, float]:
    """Mean validation Dice (original grid) of ``segmenter`` for each minimum component fraction."""
    results = {fraction: [] for fraction in MIN_COMPONENT_FRACTIONS}
    for v in validation:
        labels = segmenter.restore(v["geometry"], v["index"], segmenter.grid_labels(v["scores"]), v["brain"])
        for fraction in MIN_COMPONENT_FRACTIONS:
            results[fraction].append(_mean_region_dice(drop_small_components(labels, fraction), v["ref_regions"]))
    return {fraction: float(np.mean(values)) for fraction, values in results.items()}


def fit_members(members: list[str], features: np.ndarray, targets: np.ndarray, knn_max_samples: int, seed: int,
                log=print) -> tuple[dict, dict[str, float]]:
    """Fit each member classifier (KNN on a stratified subset); returns the estimators and their fit seconds."""
    estimators, fit_s = {}, {}
    for member in members:
        start = time.perf_counter()
        rows = stratified_subset(targets, knn_max_samples, seed) if member == "knn" else slice(None)
        log(f"{member}: fitting on {len(targets[rows])} samples…")
        estimators[member] = clone(build_estimator(member, seed)).fit(features[rows], targets[rows])
        fit_s[member] = time.perf_counter() - start
        log(f"{member}: fitted in {fit_s[member]:.1f} s")
    return estimators, fit_s


def train(models: list[str], train_files: list[CaseFiles], val_files: list[CaseFiles],
          preprocess_config: PreprocessConfig = DEFAULT_PREPROCESS, feature_config: FeatureConfig = FeatureConfig(),
          samples_per_case: int = 4000, knn_max_samples: int = 10000, seed: int = 0,
          log=None, progress: bool = True) -> dict[str, VoxelSegmenter]:
    """Fit, tune and return the requested models (see module docstring); nothing is written.

    ``log`` (default: print, flushed at once) gets a line when each step starts and ends; ``progress`` shows a
    bar over the cases of each pass.
    """
    log = log or partial(print, flush=True)
    if not val_files:
        raise BratsError("the split has no validation cases; the ML models tune their thresholds on them")
    start = time.perf_counter()
    log(f"features: {len(train_files)} training cases (each loaded once)…")
    atlas, features, targets = training_samples(train_files, preprocess_config, feature_config, samples_per_case, seed,
                                                progress)
    levels = atlas.levels()
    features_s = time.perf_counter() - start
    log(f"features: {features.shape[0]} samples x {features.shape[1]} from {atlas.n_cases} cases in {features_s:.1f} s")

    members = list(members_of(*models))
    estimators, fit_s = fit_members(members, features, targets, knn_max_samples, seed, log)

    start = time.perf_counter()
    # Only prepare() and member_scores() of this probe are used: they serve every fitted member at once.
    probe = VoxelSegmenter(models[0], estimators, dict.fromkeys(members, 0.0), levels, preprocess_config,
                           feature_config)
    probe.set_n_jobs(-1)
    log(f"tuning: scoring {len(val_files)} validation cases with {', '.join(members)}…")
    validation = [_validation_case(case_files, probe) for case_files in _bar(val_files, "validation", progress)]
    thresholds, val_dice = {}, {}
    for member in members:
        thresholds[member], val_dice[member] = tune_threshold(validation, member)
        log(f"{member}: tumour threshold {thresholds[member]:.4g} (validation grid Dice {val_dice[member]:.3f})")
    lead = max(members, key=val_dice.get)
    tuning_s = time.perf_counter() - start

    log(f"tuning: smallest tumour component kept, for {', '.join(models)}…")
    out = {}
    for name in models:
        start = time.perf_counter()
        own = members_of(name)
        segmenter = VoxelSegmenter(name, {m: estimators[m] for m in own}, {m: thresholds[m] for m in own},
                                   levels, preprocess_config, feature_config,
                                   lead=lead if name == "ensemble" else None)
        post = tune_postprocessing(segmenter, validation)
        best = max(post.values())
        segmenter.min_component_fraction = min(f for f, value in post.items() if value >= best - 1e-9)
        by_fraction = ", ".join(f"{fraction:g}: {value:.4f}" for fraction, value in post.items())
        log(f"{name}: validation mean Dice by min component fraction {{{by_fraction}}} "
            f"-> {segmenter.min_component_fraction:g}")
        segmenter.info = {
            "train_case_ids": atlas.case_ids,
            "val_case_ids": [f.case_id for f in val_files],
            "samples": int(len(targets)),
            "samples_per_case": samples_per_case,
            "knn_max_samples": knn_max_samples,
            "seed": seed,
            "features_seconds": features_s,
            "fit_seconds": sum(fit_s[m] for m in own),
            "tuning_seconds": tuning_s + time.perf_counter() - start,
            "val_grid_dice": {m: val_dice[m] for m in own},
            "val_dice_by_min_component_fraction": {str(k): v for k, v in post.items()},
            "hardware": this_machine(),
            "created": today(),
        }
        out[name] = segmenter
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="brats train ml", description=description(__doc__),
                                     formatter_class=PlainHelpFormatter)
    parser.add_argument("--model", choices=(*MODEL_NAMES, "all"), default="all")
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="folder (or .zip) of cases")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="patient-level split JSON")
    parser.add_argument("--checkpoints", type=Path, default=CHECKPOINT_DIR, help="folder for <model>.joblib (default: the shipped checkpoints' folder; they are replaced)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="evaluation root: <results>/<model>/")
    parser.add_argument("--size", type=int, default=DEFAULT_PREPROCESS.size, help="in-plane size of the grid")
    parser.add_argument("--samples-per-case", type=int, default=4000)
    parser.add_argument("--knn-max-samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation on the test cases")
    add_final_options(parser, "final checkpoints: fit on every case of --data (no split, no test evaluation), "
                      "with the thresholds and post-processing tuned by the cross-validation in --cv",
                      "with --all-cases: the --out folder of `brats compare --folds K` that trained these models "
                      "(reads <cv>/compare/fold_<k>/ and <cv>/compare/<model>/)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    check_final_options(parser, args)
    check_output_paths(checkpoints=args.checkpoints / "model.joblib", results=args.results / "summary.json")

    models = list(MODEL_NAMES) if args.model == "all" else [args.model]
    if args.all_cases:
        with open_cases(args.data) as files:
            return _train_final(args, models, files)
    with split_case_files(args.data, args.split) as subsets:
        return _train(args, models, subsets)


def _train_final(args: argparse.Namespace, models: list[str], files: list[CaseFiles]) -> int:
    from Machine_Learning_Model.final import final_models

    print(f"brats train ml: final {', '.join(models)} on all {len(files)} cases of {args.data}, tuned values "
          f"from the cross-validation in {args.cv}", flush=True)
    segmenters = final_models(models, files, args.cv, PreprocessConfig(size=args.size), FeatureConfig(),
                              args.samples_per_case, args.knn_max_samples, args.seed, log=partial(print, flush=True))
    for segmenter in segmenters.values():
        _save(segmenter, args.checkpoints)
    return 0


def _save(segmenter: VoxelSegmenter, folder: Path) -> Path:
    """``<folder>/<model>.joblib``, said on stdout with its size."""
    path = segmenter.save(folder / f"{segmenter.name}.joblib")
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)
    return path


def _train(args: argparse.Namespace, models: list[str], subsets: dict[str, list[CaseFiles]]) -> int:
    from brats_core.evaluation import evaluate_segmenter

    print(f"brats train ml: {', '.join(models)} on {len(subsets['train'])} training and {len(subsets['val'])} "
          f"validation cases of {args.data} ({args.split.name})", flush=True)
    start = time.perf_counter()
    segmenters = train(models, subsets["train"], subsets["val"], PreprocessConfig(size=args.size), FeatureConfig(),
                       args.samples_per_case, args.knn_max_samples, args.seed)
    print(f"trained {', '.join(models)} in {time.perf_counter() - start:.1f} s", flush=True)
    test_files = [] if args.no_eval else subsets["test"]
    for name, segmenter in segmenters.items():
        path = _save(segmenter, args.checkpoints)
        if test_files:
            out_dir = args.results / name
            segmenter.set_n_jobs(-1)
            record = {"model": name, "checkpoint": path.name, "checkpoint_bytes": path.stat().st_size,
                      "thresholds": segmenter.thresholds, "lead": segmenter.lead,
                      "min_component_fraction": segmenter.min_component_fraction, **segmenter.info}
            evaluate_segmenter(segmenter, test_files, out_dir, extra=record)
            print((out_dir / "summary.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Naive mean model: one voxel-wise tumour atlas, thresholded, for every case.

BraTS cases are co-registered to one 240x240x155 template, so the mean over the training cases of each
region mask (WT, TC, ET) is a probability map of where tumours sit. A case is predicted by thresholding
those maps inside its own brain mask; the thresholds maximise the mean Dice per region over the training
cases, each scored against a leave-one-out atlas (the atlas without that case), so a case never votes for
itself. The same map serves every case: that is what makes it naive.

Train, save, evaluate on the split's test cases and draw the maps::

    python Naive_Model/naive_mean_model.py            # or: brats train naive
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from brats_core.cases import Case, CaseFiles, load_case, open_cases
from brats_core.config import DEFAULT_SPLIT, REGIONS, RESULTS_DIR, SHARED_DATA_DIR
from brats_core.errors import BratsError, CheckpointError
from brats_core.figures import save_png
from brats_core.files import check_output_paths
from brats_core.helptext import PlainHelpFormatter, description
from brats_core.labels import labels_to_regions, regions_to_labels
from brats_core.preprocessing import brain_mask
from brats_core.provenance import (
    Provenance,
    add_final_options,
    check_final_options,
    compare_cv,
    this_machine,
    today,
)
from brats_core.split import split_case_files

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = PACKAGE_DIR / "checkpoints" / "naive.npz"
DEFAULT_PNG = PACKAGE_DIR / "output" / "naive_mean_maps.png"
#: Version of the checkpoint layout; bump when the stored arrays or their meaning change.
CHECKPOINT_FORMAT = 1
#: Shape of the BraTS template every real case is registered to.
BRATS_SHAPE = (240, 240, 155)
REGION_NAMES: tuple[str, ...] = tuple(REGIONS)
#: Atlas means are stored as uint8 levels: level = round(255 * mean).
LEVELS = 255


def quantise(fraction: np.ndarray) -> np.ndarray:
    """Map fractions in [0, 1] to uint8 levels ``round(255 * fraction)``."""
    return np.rint(np.asarray(fraction, dtype=np.float64) * LEVELS).astype(np.uint8)


@dataclass
class AtlasCounts:
    """Per-voxel number of training cases containing each region; the raw material of the atlas."""

    counts: np.ndarray | None = None  # (3, X, Y, Z) uint16, regions WT/TC/ET
    case_ids: list[str] = field(default_factory=list)

    @property
    def n_cases(self) -> int:
        return len(self.case_ids)

    def add(self, case: Case) -> np.ndarray:
        """Count the regions of ``case`` (which needs a seg); returns its (3, X, Y, Z) region masks."""
        if case.seg is None:
            raise BratsError(f"case {case.case_id}: training needs a segmentation (seg file), none found")
        if self.counts is None:
            self.counts = np.zeros((len(REGION_NAMES), *case.shape), dtype=np.uint16)
        check_template_shape(case, self.counts.shape[1:], "first training case's")
        regions = labels_to_regions(case.seg)
        self.counts += regions
        self.case_ids.append(case.case_id)
        return regions

    def levels(self) -> np.ndarray:
        """The atlas: uint8 levels of the mean region masks, shape (3, X, Y, Z)."""
        return quantise(self.counts / self.n_cases)

    def leave_one_out_levels(self, regions: np.ndarray) -> np.ndarray:
        """The atlas levels without one of its cases, given that case's (3, X, Y, Z) region masks."""
        if self.n_cases < 2:
            raise BratsError("a leave-one-out atlas needs at least two training cases")
        return quantise((self.counts - regions) / (self.n_cases - 1))


def check_template_shape(case: Case, shape: Sequence[int], what: str) -> None:
    """Raise :class:`BratsError` unless ``case`` has the ``shape`` of the atlas (``what`` names that shape)."""
    if tuple(case.shape) != tuple(shape):
        raise BratsError(
            f"case {case.case_id} ({case.files.images.get('t1', 'in memory')}): shape {tuple(case.shape)} differs "
            f"from the {what} shape {tuple(shape)}; an atlas needs cases registered to one template "
            f"(BraTS: {BRATS_SHAPE})"
        )


def _dice_per_level(levels: np.ndarray, ref: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Dice of ``(levels >= t) & brain`` against ``ref`` for every threshold level t = 1..255, vectorised.

    Histograms of the levels inside the brain and inside ``ref & brain``, cumulated from the top, give the
    predicted size and the overlap of every threshold at once.
    """
    predicted = np.bincount(levels[brain], minlength=LEVELS + 1)[::-1].cumsum()[::-1]
    overlap = np.bincount(levels[brain & ref], minlength=LEVELS + 1)[::-1].cumsum()[::-1]
    total = predicted[1:] + int(np.count_nonzero(ref))
    return np.where(total == 0, 1.0, 2.0 * overlap[1:] / np.maximum(total, 1))


def _best_level(mean_dice: np.ndarray) -> int:
    """Threshold level (1..255) of the best mean Dice; the middle of the best plateau when there are ties."""
    best = np.flatnonzero(mean_dice >= mean_dice.max() - 1e-12)
    return int(best[len(best) // 2]) + 1


class NaiveMeanSegmenter:
    """Thresholded region atlas restricted to each case's brain mask (see module docstring)."""

    name = "naive"

    def __init__(self, levels: np.ndarray, thresholds: np.ndarray, case_ids: Sequence[str],
                 train_dice: np.ndarray | None = None, fit_seconds: float | None = None,
                 hardware: str | None = None, created: str | None = None,
                 cv_scores: dict[str, float] | None = None) -> None:
        levels = np.asarray(levels, dtype=np.uint8)
        thresholds = np.asarray(thresholds, dtype=np.uint8)
        if levels.ndim != 4 or levels.shape[0] != len(REGION_NAMES) or thresholds.shape != (len(REGION_NAMES),):
            raise CheckpointError(
                f"naive atlas must be (3, X, Y, Z) levels with 3 thresholds, got {levels.shape} and {thresholds.shape}"
            )
        self.levels = levels
        self.thresholds = thresholds
        self.case_ids = list(case_ids)
        self.train_dice = np.full(len(REGION_NAMES), np.nan) if train_dice is None else np.asarray(train_dice)
        self.fit_seconds = fit_seconds
        self.hardware, self.created = hardware, created
        #: Out-of-fold scores of the cross-validation that chose this recipe (final checkpoints), else None.
        self.cv_scores = None if cv_scores is None else {key: float(v) for key, v in cv_scores.items()}

    @property
    def provenance(self) -> Provenance:
        """Training cases, fit time and scores: the leave-one-out training Dice per region (``loo_WT_dice``...)
        and, for a final checkpoint, its CV's out-of-fold scores (``cv_WT_dice_mean``...)."""
        scores = {f"loo_{r}_dice": float(d) for r, d in zip(REGION_NAMES, self.train_dice, strict=True)
                  if np.isfinite(d)}
        scores.update(self.cv_scores or {})
        return Provenance(train_cases=tuple(self.case_ids), cv_scores=scores or None,
                          train_seconds=self.fit_seconds, hardware=self.hardware, created=self.created)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.levels.shape[1:])

    @classmethod
    def fit(cls, cases: Iterable[Case], progress: bool = False) -> NaiveMeanSegmenter:
        """Build the atlas from ``cases`` (with seg) and tune one threshold per region (leave-one-out).

        ``fit_seconds`` records the wall time, including the loading of the cases that ``cases`` yields.
        ``progress``: a bar (stderr) over the cases of the tuning pass.
        """
        start = time.perf_counter()
        atlas, packed = AtlasCounts(), []
        for case in cases:
            regions = atlas.add(case)
            # Bit-packed masks keep every case in memory for the second pass (~4 MB per BraTS case).
            packed.append((np.packbits(regions), np.packbits(brain_mask(case.images))))
        if atlas.n_cases < 2:
            raise BratsError(f"the naive model needs at least two training cases with seg, got {atlas.n_cases}")
        counts, ids = atlas.counts, atlas.case_ids
        shape = counts.shape[1:]
        n_voxels = int(np.prod(shape))
        dice = np.zeros((len(ids), len(REGION_NAMES), LEVELS))
        tuning = tqdm(packed, desc="naive: thresholds, leave-one-out", unit="case", leave=False, disable=not progress)
        for i, (regions_bits, brain_bits) in enumerate(tuning):
            regions = np.unpackbits(regions_bits, count=3 * n_voxels).reshape(counts.shape).astype(bool)
            brain = np.unpackbits(brain_bits, count=n_voxels).reshape(shape).astype(bool)
            loo = atlas.leave_one_out_levels(regions)
            for r in range(len(REGION_NAMES)):
                dice[i, r] = _dice_per_level(loo[r], regions[r], brain)
        mean_dice = dice.mean(axis=0)
        thresholds = np.array([_best_level(mean_dice[r]) for r in range(len(REGION_NAMES))], dtype=np.uint8)
        train_dice = mean_dice[np.arange(len(REGION_NAMES)), thresholds.astype(int) - 1]
        return cls(atlas.levels(), thresholds, ids, train_dice, time.perf_counter() - start, this_machine(), today())

    def predict(self, case: Case) -> np.ndarray:
        """Labels 0/1/2/4 (uint8, ``case.shape``): atlas above each region's threshold, inside the brain."""
        check_template_shape(case, self.shape, "atlas")
        brain = brain_mask(case.images)
        regions = (self.levels >= self.thresholds[:, None, None, None]) & brain
        return regions_to_labels(regions)

    def metadata(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.name,
            "regions": list(REGION_NAMES),
            "thresholds": [int(t) / LEVELS for t in self.thresholds],
            "train_loo_dice": {r: float(d) for r, d in zip(REGION_NAMES, self.train_dice, strict=True)},
            "case_ids": self.case_ids,
            "fit_seconds": self.fit_seconds,
            "hardware": self.hardware,
            "created": self.created,
            "cv_scores": self.cv_scores,
            "numpy": np.__version__,
        }

    def save(self, path: Path | str) -> Path:
        """Write the compressed checkpoint (uint8 atlas levels, thresholds, JSON metadata; no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            np.savez_compressed(handle, levels=self.levels, thresholds=self.thresholds,
                                train_dice=self.train_dice, metadata=np.array(json.dumps(self.metadata())))
        return path

    @classmethod
    def load(cls, path: Path | str) -> NaiveMeanSegmenter:
        """Read a checkpoint written by :meth:`save`; :class:`CheckpointError` when missing, corrupt or foreign."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: naive model checkpoint not found (train it with `brats train naive`)")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in ("levels", "thresholds", "train_dice", "metadata")}
            metadata = json.loads(str(arrays["metadata"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"{path}: not a readable naive model checkpoint ({type(exc).__name__}: {exc})") from None
        if not isinstance(metadata, dict) or metadata.get("model") != cls.name:
            raise CheckpointError(f"{path}: not a naive model checkpoint (model={metadata.get('model')!r})")
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path}: checkpoint format {metadata.get('format')!r} does not match this code's format "
                f"{CHECKPOINT_FORMAT}; retrain with `brats train naive`"
            )
        return cls(arrays["levels"], arrays["thresholds"], metadata["case_ids"], arrays["train_dice"],
                   metadata.get("fit_seconds"), metadata.get("hardware"), metadata.get("created"),
                   cv_scores=metadata.get("cv_scores"))


def load_segmenter(name: str, checkpoint: Path, device: str | None = None) -> NaiveMeanSegmenter:
    """Loader of the registry (:mod:`brats_app.registry`); ``device`` does not apply (numpy on the CPU)."""
    if name != NaiveMeanSegmenter.name:
        raise BratsError(f"Naive_Model provides the model 'naive', not {name!r}")
    return NaiveMeanSegmenter.load(checkpoint)


def save_mean_maps_png(segmenter: NaiveMeanSegmenter, path: Path | str) -> Path:
    """Axial, coronal and sagittal cuts of the three mean maps through the atlas's WT peak, thresholds outlined."""
    from matplotlib.figure import Figure

    means = segmenter.levels.astype(np.float32) / LEVELS
    peak = np.unravel_index(int(np.argmax(means[0])), segmenter.shape)
    cuts = {"axial": lambda v: v[:, :, peak[2]].T, "coronal": lambda v: v[:, peak[1], :].T,
            "sagittal": lambda v: v[peak[0], :, :].T}
    fig = Figure(figsize=(11, 8), dpi=90, layout="constrained")
    axes = fig.subplots(len(REGION_NAMES), len(cuts), squeeze=False)
    for r, region in enumerate(REGION_NAMES):
        threshold = segmenter.thresholds[r] / LEVELS
        for c, (view, cut) in enumerate(cuts.items()):
            ax = axes[r, c]
            image = ax.imshow(cut(means[r]), origin="lower", cmap="magma", vmin=0.0, vmax=max(means.max(), 1e-6))
            ax.contour(cut(means[r]), levels=[threshold], colors="cyan", linewidths=0.8)
            ax.set_title(f"{region} {view} (threshold {threshold:.2f})", fontsize=9)
            ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.6, label="fraction of training cases")
    fig.suptitle(f"Naive mean model: region atlases of {len(segmenter.case_ids)} training cases")
    return save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="brats train naive", description=description(__doc__),
                                     formatter_class=PlainHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="folder (or .zip) of cases")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="patient-level split JSON")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="where to save the atlas (default: the shipped checkpoint, which this replaces)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "naive", help="evaluation output folder")
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG, help="PNG of the mean maps")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation on the test cases")
    add_final_options(parser, "final checkpoint: the atlas of every case of --data (no split, no test evaluation)",
                      "with --all-cases: the --out folder of the `brats compare --folds K` run whose out-of-fold "
                      "scores the checkpoint records")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    check_final_options(parser, args)
    check_output_paths(checkpoint=args.checkpoint, results=args.results / "summary.json", png=args.png)

    if args.all_cases:
        scores, _ = compare_cv(args.cv, "naive")
        with open_cases(args.data) as files:
            return _train(args, {"train": files, "test": []}, scores)
    with split_case_files(args.data, args.split) as subsets:
        return _train(args, subsets)


def _train(args: argparse.Namespace, subsets: dict[str, list[CaseFiles]], scores: dict | None = None) -> int:
    from brats_core.evaluation import evaluate_segmenter

    train_files = subsets["train"]
    print(f"naive: atlas of {len(train_files)} training cases, then one threshold per region…", flush=True)
    loading = tqdm(train_files, desc="naive: atlas, load and count", unit="case", leave=False)
    segmenter = NaiveMeanSegmenter.fit((load_case(files) for files in loading), progress=True)
    segmenter.cv_scores = scores
    segmenter.save(args.checkpoint)
    save_mean_maps_png(segmenter, args.png)
    thresholds = ", ".join(f"{r} {t / LEVELS:.3f}" for r, t in zip(REGION_NAMES, segmenter.thresholds, strict=True))
    print(f"naive: atlas of {len(train_files)} training cases in {segmenter.fit_seconds:.1f} s; "
          f"thresholds {thresholds}", flush=True)
    print(f"saved {args.checkpoint} ({args.checkpoint.stat().st_size / 1e6:.2f} MB) and {args.png}")
    if not args.no_eval and subsets["test"]:
        test_files = subsets["test"]
        record = {"model": segmenter.name, "fit_seconds": segmenter.fit_seconds,
                  "train_case_ids": segmenter.case_ids, "checkpoint": args.checkpoint.name,
                  "checkpoint_bytes": args.checkpoint.stat().st_size}
        evaluate_segmenter(segmenter, test_files, args.results, extra=record)
        print((args.results / "summary.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fusion of the U-Net's and the U-Net + SSPP's probabilities: one segmenter (``brats predict --model fusion``).

Each model predicts the case's slices with its own head, context and test-time flips; the probabilities are
averaged (optionally weighted) slice by slice before the way back to the original grid:

- all models with a 4-class softmax head: the class probabilities are averaged and the argmax taken, as a single
  softmax model does;
- otherwise (a regions head among them): every model's probabilities become WT/TC/ET probabilities (softmax
  classes summed per region, :func:`Deep_Learning_Model.heads.region_probabilities`), which are averaged and
  thresholded as a regions head's.

The case is preprocessed once (the models must share their preprocessing). Fusing costs the sum of the models'
inference time, so it is an option; the served default stays one model. Post-processing: ``postprocess`` when
given, else the one the models' exports record when they all record the same, else none.

The registry's ``fusion`` model is a manifest (:mod:`Deep_Learning_Model.fusion_manifest`): the shipped
``fusion.json`` names ``unet.pt`` and ``sspp.pt`` and carries the post-processing tuned on the fusion's own
out-of-fold predictions and that CV's scores.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from brats_core.cases import Case
from brats_core.device import resolve_device
from brats_core.errors import BratsError, CheckpointError
from brats_core.postprocess import PostprocessConfig, apply_postprocess
from brats_core.preprocessing import Preprocessed, preprocess
from brats_core.provenance import Provenance, summary_scores
from Deep_Learning_Model.fusion_manifest import FUSED, SHIPPED_DIR, read_manifest
from Deep_Learning_Model.heads import region_probabilities, restore_labels
from Deep_Learning_Model.predictor import DEFAULT_BATCH_SIZE, Predictor, slice_probabilities


class FusionSegmenter:
    """Weighted mean of the probabilities of ``predictors`` (a :class:`brats_core.evaluation.Segmenter`)."""

    def __init__(self, predictors: Sequence[Predictor], weights: Sequence[float] | None = None,
                 postprocess: PostprocessConfig | None = None, info: dict | None = None) -> None:
        if len(predictors) < 2:
            raise BratsError("fusion needs at least two models")
        weights = [1.0] * len(predictors) if weights is None else [float(w) for w in weights]
        if len(weights) != len(predictors) or min(weights) < 0 or sum(weights) <= 0:
            raise BratsError(f"fusion weights {weights} must be one non-negative number per model, not all 0")
        configs = [p.preprocess_config for p in predictors]
        if any(c != configs[0] for c in configs):
            raise BratsError(f"fused models must share their preprocessing, got {', '.join(map(str, configs))}")
        binary = [p.meta.get("path", p.name) for p in predictors if p.model_config.num_classes != 4]
        if binary:
            raise BratsError(f"cannot fuse whole-tumour (2-class) models: {', '.join(map(str, binary))}")
        self.predictors = list(predictors)
        self.weights = [w / sum(weights) for w in weights]
        self.preprocess_config = configs[0]
        heads = {p.model_config.head for p in predictors}
        self.head = "softmax" if heads == {"softmax"} else "regions"
        recorded = [p.postprocess for p in predictors]
        same = all(r == recorded[0] for r in recorded)
        self.postprocess = postprocess or (recorded[0] if same else PostprocessConfig())
        #: The manifest's record (``info.cv``: the fusion's own CV), empty for a fusion built here.
        self.info = info or {}
        self.name = "fusion"

    @property
    def tta(self) -> bool:
        return all(p.tta for p in self.predictors)

    @property
    def provenance(self) -> Provenance:
        """Every case any fused model was trained or tuned on; the scores of the fusion's own CV when its manifest
        records one; the members' summed training time and their machines."""
        records = [p.provenance for p in self.predictors]
        train = tuple(dict.fromkeys(c for r in records for c in r.train_cases))
        val = tuple(dict.fromkeys(c for r in records for c in r.val_cases if c not in train))
        cv = self.info.get("cv", {})
        scores = summary_scores({**cv["scores"], "n_cases": cv["cases"]}) if cv.get("scores") else None
        seconds = [r.train_seconds for r in records]
        hardware = "; ".join(dict.fromkeys(r.hardware for r in records if r.hardware)) or None
        return Provenance(train_cases=train, val_cases=val, cv_scores=scores,
                          train_seconds=None if None in seconds else float(sum(seconds)), hardware=hardware,
                          created=self.info.get("created"))

    def with_tta(self, tta: bool) -> FusionSegmenter:
        """This fusion with test-time flips on or off in every member (shallow copies sharing the networks)."""
        if all(p.tta == tta for p in self.predictors):
            return self
        flipped = copy.copy(self)
        flipped.predictors = [p.with_tta(tta) for p in self.predictors]
        return flipped

    def probabilities(self, pre: Preprocessed) -> torch.Tensor:
        """Fused slice probabilities (Z', K, S, S): 4 classes (all softmax) or WT/TC/ET."""
        fused = None
        for predictor, weight in zip(self.predictors, self.weights, strict=True):
            config = predictor.model_config
            probs = slice_probabilities(predictor.model, pre.images, predictor.device, config.context, predictor.tta,
                                        predictor.batch_size, predictor.amp, config.head)
            if self.head == "regions":
                probs = region_probabilities(probs, config.head)
            fused = weight * probs if fused is None else fused + weight * probs
        return fused

    def predict_preprocessed(self, pre: Preprocessed) -> np.ndarray:
        labels = restore_labels(self.probabilities(pre), pre.geometry, self.head, self.postprocess.thresholds)
        return apply_postprocess(labels, pre.geometry.spacing, self.postprocess)

    def predict(self, case: Case) -> np.ndarray:
        """Labels (X, Y, Z) uint8 0/1/2/4 with ``case.shape``."""
        return self.predict_preprocessed(preprocess(case, self.preprocess_config))


def raw_segmenter(exports: Sequence[Path], device: torch.device | str | None = None,
                  tta: bool = False) -> Predictor | FusionSegmenter:
    """The predictor of one export, or the fusion of several, with no post-processing (whatever the exports
    record): the raw out-of-fold predictions that CV scores and post-processing tuning start from."""
    predictors = [Predictor.from_export(path, device=device, tta=tta) for path in exports]
    for predictor in predictors:
        predictor.postprocess = PostprocessConfig()
    return predictors[0] if len(predictors) == 1 else FusionSegmenter(predictors, postprocess=PostprocessConfig())


def load_segmenter(
    name: str = "fusion",
    checkpoint: Path | str = SHIPPED_DIR / "fusion.json",
    device: torch.device | str | None = None,
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    loaded: Mapping[str, Predictor] | None = None,
) -> FusionSegmenter:
    """Loader of the registry's ``fusion``: ``checkpoint`` is a manifest (default: the shipped ``fusion.json``),
    or a folder holding one, or a folder of ``unet.pt`` and ``sspp.pt`` alone (fused with their own recorded
    post-processing when they share it, and no CV record).

    ``loaded``: predictors already in memory by their export's resolved path (the API's served models); a member
    among them with the same device, flips and batch size is shared instead of loaded a second time."""
    device = resolve_device(device)
    path = Path(checkpoint)
    if path.is_dir() and (path / "fusion.json").is_file():
        path = path / "fusion.json"

    def member(export: Path) -> Predictor:
        known = (loaded or {}).get(str(export.resolve()))
        if known is not None and (known.device, known.tta, known.batch_size) == (device, tta, batch_size):
            return known
        return Predictor.from_export(export, device=device, tta=tta, batch_size=batch_size)

    if path.is_file():
        manifest = read_manifest(path)
        return FusionSegmenter([member(p) for p in manifest.members], manifest.weights, manifest.postprocess,
                               manifest.info)
    if not path.is_dir():
        raise CheckpointError(f"{path}: the fusion model takes its manifest (fusion.json) or a folder holding "
                              f"{', '.join(f'{m}.pt' for m in FUSED)}")
    paths = [path / f"{model}.pt" for model in FUSED]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CheckpointError(f"fusion: missing export(s) {', '.join(missing)}")
    return FusionSegmenter([member(p) for p in paths])

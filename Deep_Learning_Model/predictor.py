"""In-process inference for the U-Net and U-Net + SSPP exports.

The model is loaded once; a case is preprocessed with :mod:`brats_core.preprocessing`, all its slices are run
in batches under ``torch.inference_mode`` in channels_last with :func:`autocast` (bf16 on CPUs with native
bf16, else fp32; bf16 or fp16 on CUDA), optionally with flip test-time augmentation, and the class
probabilities are mapped back to the original geometry (bilinear in-plane, :meth:`Geometry.restore_argmax`)
before the argmax (softmax head) or the thresholds (regions head, :mod:`Deep_Learning_Model.heads`), then the
post-processing recorded in the export, if any (:mod:`brats_core.postprocess`).
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from brats_core.cases import Case
from brats_core.config import REGIONS, PreprocessConfig
from brats_core.dataset import stack_context
from brats_core.device import autocast, resolve_device
from brats_core.errors import CheckpointError
from brats_core.postprocess import PostprocessConfig, apply_postprocess
from brats_core.preprocessing import Geometry, Preprocessed, preprocess
from brats_core.provenance import Provenance, summary_scores
from Deep_Learning_Model.export import load_export
from Deep_Learning_Model.heads import probabilities, restore_labels
from Deep_Learning_Model.model import ModelConfig

#: Slices per forward pass: 8 to 32 cost the same CPU time per case (benchmarks/inference_cpu.py), 16 keeps
#: the activations of a 128x128 base-32 model near 0.5 GB.
DEFAULT_BATCH_SIZE = 16
#: Flips of the in-plane axes averaged by test-time augmentation (the identity is always included).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((-1,), (-2,))


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in eval mode on ``device``, channels_last (the fast layout of oneDNN and cuDNN convolutions)."""
    return model.to(device).to(memory_format=torch.channels_last).eval()


def _float_slices(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """``images`` as a float32 tensor on ``device``, wrapping writable float32 arrays without a copy.

    Other arrays are converted (float16 cache maps) or copied (read-only float32: torch cannot wrap those).
    """
    if not torch.is_tensor(images):
        array = np.asarray(images, dtype=np.float32)
        images = torch.from_numpy(array if array.flags.writeable else array.copy())
    return images.to(device=device, dtype=torch.float32)


def slice_probabilities(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    device: torch.device | str | None = None,
    context: int = 0,
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    amp: bool = True,
    head: str = "softmax",
) -> torch.Tensor:
    """Probabilities (Z', K, S, S) float32 on the CPU for the slices ``images`` (Z', C, S, S): the softmax of a
    ``softmax`` head, the WT/TC/ET sigmoids of a ``regions`` head (:func:`Deep_Learning_Model.heads.probabilities`).

    ``images`` may be any array or tensor, read-only float16 memory maps of the cache included: only one
    batch of slices (and its ``context`` neighbours) at a time is copied to ``device`` as float32.
    ``model`` must already be in eval mode on ``device``. With ``tta`` the probabilities are the mean over the
    identity and the flips in :data:`TTA_FLIPS`; ``amp=False`` runs in fp32 instead of :func:`autocast`.
    """
    device = resolve_device(device)
    flips: tuple[tuple[int, ...], ...] = ((), *TTA_FLIPS) if tta else ((),)
    total = images.shape[0]
    chunks = []
    with torch.inference_mode(), autocast(device) if amp else contextlib.nullcontext():
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            # The batch and its neighbours; clamping at the window's ends is clamping at the volume's ends,
            # since the window stops short of a context neighbour only where the volume does.
            low, high = max(start - context, 0), min(stop + context, total)
            window = _float_slices(images[low:high], device)
            index = torch.arange(start - low, stop - low, device=device)
            x = stack_context(window, index, context).contiguous(memory_format=torch.channels_last)
            probs = None
            for dims in flips:
                p = probabilities(model(x.flip(dims) if dims else x), head)
                p = p.flip(dims) if dims else p
                probs = p if probs is None else probs + p
            chunks.append((probs / len(flips)).cpu())
    return torch.cat(chunks)


def predict_volume(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    geometry: Geometry,
    device: torch.device | str | None = None,
    context: int = 0,
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    amp: bool = True,
    head: str = "softmax",
    thresholds: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Label map (X, Y, Z) uint8 0/1/2/4 in the original geometry for preprocessed slices (Z', 4, S, S).

    Shared by :class:`Predictor` and validation during training; ``model`` is in eval mode on ``device``.
    ``thresholds``: of the WT/TC/ET probabilities of a regions head (default 0.5 each).
    """
    probs = slice_probabilities(model, images, device, context, tta, batch_size, amp, head)
    return restore_labels(probs, geometry, head, thresholds)


class Predictor:
    """A loaded U-Net / U-Net + SSPP export implementing the :class:`brats_core.evaluation.Segmenter` protocol."""

    def __init__(
        self,
        model: nn.Module,
        model_config: ModelConfig,
        preprocess_config: PreprocessConfig,
        device: torch.device | str | None = None,
        tta: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        meta: dict | None = None,
        amp: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        self.model = prepare_model(model, self.device)
        self.model_config = model_config
        self.preprocess_config = preprocess_config
        self.tta = tta
        self.batch_size = batch_size
        self.amp = amp
        self.name = model_config.arch
        self.meta = meta or {}
        #: Thresholds and label post-processing recorded in the export (none: 0.5 thresholds, no change).
        self.postprocess = PostprocessConfig.from_dict(self.meta.get("postprocess") or {})

    @classmethod
    def from_export(
        cls,
        path: Path | str,
        device: torch.device | str | None = None,
        tta: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        amp: bool = True,
    ) -> Predictor:
        """Load the export at ``path`` (see :func:`Deep_Learning_Model.export.load_export`)."""
        device = resolve_device(device)
        model, model_config, preprocess_config, meta = load_export(path, device)
        return cls(model, model_config, preprocess_config, device, tta, batch_size, meta=meta, amp=amp)

    @property
    def provenance(self) -> Provenance:
        """The export's training record: cases, scores (the validation Dice of the best epoch, ``val_*``, and the
        out-of-fold scores of the cross-validation when ``cv.py`` recorded one, ``cv_*``), time and machine."""
        info, metrics = self.meta.get("info", {}), self.meta.get("metrics", {})
        scores = {f"val_{key}_dice": float(metrics[key]["dice"]) for key in REGIONS
                  if isinstance(metrics.get(key), dict)}
        if metrics.get("mean_dice") is not None:
            scores["val_mean_dice"] = float(metrics["mean_dice"])
        cv = info.get("cv", {})
        if cv.get("scores"):  # a final export of cv.py: its CV's out-of-fold scores, named as every family's
            scores.update(summary_scores({**cv["scores"], "n_cases": cv["cases"]}))
        return Provenance(
            train_cases=tuple(info.get("train_cases", ())), val_cases=tuple(info.get("val_cases", ())),
            cv_scores=scores or None, train_seconds=info.get("train_seconds"),
            hardware=info.get("hardware", info.get("trained_on")), created=info.get("created"),
        )

    def with_tta(self, tta: bool) -> Predictor:
        """This predictor with test-time flips on or off: a shallow copy sharing the loaded network (no second
        copy of the weights; the network is only read), or ``self`` when nothing changes."""
        if tta == self.tta:
            return self
        flipped = copy.copy(self)
        flipped.tta = tta
        return flipped

    def predict_preprocessed(self, pre: Preprocessed) -> np.ndarray:
        """Labels (X, Y, Z) uint8 in the original geometry for an already preprocessed case."""
        labels = predict_volume(
            self.model, pre.images, pre.geometry, self.device, self.model_config.context, self.tta, self.batch_size,
            self.amp, self.model_config.head, self.postprocess.thresholds,
        )
        return apply_postprocess(labels, pre.geometry.spacing, self.postprocess)

    def predict(self, case: Case) -> np.ndarray:
        """Labels (X, Y, Z) uint8 0/1/2/4 with ``case.shape``."""
        return self.predict_preprocessed(preprocess(case, self.preprocess_config))


def load_segmenter(
    name: str,
    checkpoint: Path | str,
    device: torch.device | str | None = None,
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Predictor:
    """Loader of the registry (:mod:`brats_app.registry`) for ``unet`` and ``sspp``."""
    path = Path(checkpoint)
    predictor = Predictor.from_export(path, device=device, tta=tta, batch_size=batch_size)
    if predictor.model_config.arch != name:
        raise CheckpointError(f"{path}: export holds a {predictor.model_config.arch!r} model, not {name!r}")
    return predictor

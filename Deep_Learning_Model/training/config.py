"""The training configuration (one typed dataclass) and its named presets.

Every run saves the effective configuration as JSON (``config.json``, training state, the export's ``info``), so
a result can always be traced back to the exact settings. Why the defaults are what they are is written in
``Deep_Learning_Model/README.md`` (section "Training").
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from brats_core.config import LABELS, MODALITIES, RESULTS_DIR, check_known_fields
from brats_core.errors import BratsError
from Deep_Learning_Model.model import ARCHS, ModelConfig
from Deep_Learning_Model.training.losses import DICE_GROUPS

#: Number of MRI modalities per slice (t1, t1ce, t2, flair).
MODALITY_CHANNELS = len(MODALITIES)
#: Number of output classes (background, NCR/NET, ED, ET).
NUM_CLASSES = len(LABELS)
SCHEDULES: tuple[str, ...] = ("cosine", "constant")
DICE_TARGETS: tuple[str, ...] = tuple(DICE_GROUPS)


def default_workers(most: int = 4) -> int:
    """DataLoader workers by default: the CPU cores this process may use, at most ``most`` (no warning from
    torch about more workers than cores on a small machine)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(most, cores))


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation of training slices (see :mod:`Deep_Learning_Model.training.augment`)."""

    #: Probability of mirroring each in-plane axis.
    flip_prob: float = 0.5
    #: Probability of a random rotation + isotropic scaling (one resampling for both).
    affine_prob: float = 0.5
    #: Rotation drawn uniformly in +- this many degrees.
    rotate_degrees: float = 15.0
    #: Scale factor drawn uniformly in this range (> 1 zooms in).
    scale_range: tuple[float, float] = (0.85, 1.15)
    #: Probability of a per-modality intensity change inside the brain.
    intensity_prob: float = 0.5
    #: Multiplicative factor drawn from N(1, sd) per modality.
    intensity_scale_sd: float = 0.1
    #: Additive shift drawn from N(0, sd) per modality (images are z-scored, so this is in SD units).
    intensity_shift_sd: float = 0.1
    #: Probability of a per-modality gamma change (range kept), gamma uniform in ``gamma_range``.
    gamma_prob: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    #: Probability of additive Gaussian noise inside the brain, its sd uniform in [0, noise_sd].
    noise_prob: float = 0.0
    noise_sd: float = 0.1
    #: Probability of a Gaussian blur inside the brain, sigma (pixels) uniform in ``blur_sigma``.
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        problems = [f"{name} must be in [0, 1]" for name in ("flip_prob", "affine_prob", "intensity_prob",
                    "gamma_prob", "noise_prob", "blur_prob") if not 0 <= getattr(self, name) <= 1]  # fmt: skip
        for name in RANGES:
            low, high = getattr(self, name)
            if not 0 < low <= high:
                problems.append(f"{name} must be (low, high) with 0 < low <= high, got {getattr(self, name)}")
        if min(self.rotate_degrees, self.intensity_scale_sd, self.intensity_shift_sd, self.noise_sd) < 0:
            problems.append("rotate_degrees and the sds must be >= 0")
        if problems:
            raise BratsError("invalid augmentation config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        data = asdict(self)
        return {k: list(v) if k in RANGES else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        check_known_fields(cls, data, "augmentation config")
        return cls(**{k: tuple(v) if k in RANGES else v for k, v in data.items()})


#: The (low, high) fields of :class:`AugmentConfig` (lists in JSON).
RANGES: tuple[str, ...] = ("scale_range", "gamma_range", "blur_sigma")
#: Stronger intensity and contrast augmentation (nnU-Net's probabilities): gamma, per-modality scaling, noise, blur.
STRONG_AUGMENT = AugmentConfig(intensity_prob=0.5, intensity_scale_sd=0.15, gamma_prob=0.3, noise_prob=0.15,
                               blur_prob=0.2)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run. Paths are strings so the config is plain JSON."""

    # model
    model: str = "unet"
    base_width: int = 32
    context: int = 0
    size: int = 128
    #: Output head: ``softmax`` over the 4 classes, or ``regions`` (sigmoid WT/TC/ET trained with BCE + Dice).
    head: str = "softmax"
    # optimisation
    epochs: int = 40
    #: Cap on the optimiser steps of an epoch (nnU-Net style); ``None`` = one pass over the training slices.
    max_steps_per_epoch: int | None = 250
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    #: Final learning rate of the cosine schedule as a fraction of ``lr``.
    min_lr_ratio: float = 0.01
    #: Maximum global gradient norm (after unscaling under fp16); ``None`` disables clipping.
    grad_clip: float | None = 1.0
    ce_weight: float = 1.0
    dice_weight: float = 1.0
    #: Soft Dice over the nested BraTS regions WT/TC/ET built from the softmax, or over the tumour classes.
    dice_over: str = "regions"
    # sampling and augmentation
    #: Fraction of the samples drawn from tumour slices (the rest uniformly from all slices); ``None`` =
    #: a uniform shuffle without replacement (the original recipe).
    oversample: float | None = 0.33
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    #: Keep the training slices on the device as tensors and sample and augment there, in batches
    #: (:class:`Deep_Learning_Model.training.batches.ResidentSlices`), instead of DataLoader workers.
    resident: bool = False
    # runtime
    device: str = "auto"
    #: Mixed precision: bf16 autocast (CPU, or CUDA with bf16), fp16 autocast + GradScaler on older GPUs.
    amp: bool = True
    channels_last: bool = True
    workers: int = field(default_factory=default_workers)
    seed: int = 0
    #: Deterministic kernels (``torch.use_deterministic_algorithms``); slower on CUDA.
    deterministic: bool = False
    val_every: int = 1
    val_batch_size: int = 32
    val_tta: bool = False
    #: Also write an inference export of the current model every N epochs, to ``<out>/snapshots/epoch_<N>.pt``
    #: (the final models of the CV keep the epoch the folds chose); ``None``: no snapshots.
    snapshot_every: int | None = None
    # data and outputs
    data: str | None = None
    from_cache: str | None = None
    cache_dir: str | None = None
    split: str | None = None
    #: Output folder; ``None`` = ``results/runs/<model>``.
    out: str | None = None
    #: Inference export written at the end; ``None`` = ``<out>/export.pt``.
    export: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`BratsError` naming every bad field."""
        problems = []
        if self.model not in ARCHS:
            problems.append(f"model {self.model!r} is not one of {ARCHS}")
        for name in ("base_width", "size", "epochs", "batch_size", "val_every", "val_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            problems.append(f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}")
        if self.snapshot_every is not None and self.snapshot_every < 1:
            problems.append(f"snapshot_every must be >= 1 or None, got {self.snapshot_every}")
        if self.context < 0 or self.workers < 0:
            problems.append("context and workers must be >= 0")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0 or not 0 <= self.min_lr_ratio <= 1:
            problems.append("need lr > 0, weight_decay >= 0, warmup_epochs >= 0 and 0 <= min_lr_ratio <= 1")
        if self.grad_clip is not None and self.grad_clip <= 0:
            problems.append(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.dice_over not in DICE_TARGETS:
            problems.append(f"dice_over {self.dice_over!r} is not one of {DICE_TARGETS}")
        if self.ce_weight < 0 or self.dice_weight < 0 or self.ce_weight + self.dice_weight == 0:
            problems.append("ce_weight and dice_weight must be >= 0 and not both 0")
        if self.oversample is not None and not 0 <= self.oversample <= 1:
            problems.append(f"oversample must be in [0, 1] or None, got {self.oversample}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device {self.device!r} is not auto, cpu, cuda or cuda:N")
        if not problems:
            try:
                self.model_config()
            except BratsError as exc:
                problems.append(str(exc))
        if problems:
            raise BratsError("invalid training config: " + "; ".join(problems))

    def model_config(self) -> ModelConfig:
        """The network this run trains (4 modalities x (2 * context + 1) slices in, 4 classes out)."""
        return ModelConfig(
            arch=self.model,
            in_channels=MODALITY_CHANNELS,
            context=self.context,
            num_classes=NUM_CLASSES,
            base_width=self.base_width,
            input_size=self.size,
            head=self.head,
        )

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else RESULTS_DIR / "runs" / self.model

    @property
    def export_path(self) -> Path:
        return Path(self.export) if self.export is not None else self.out_dir / "export.pt"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["augment"] = None if self.augment is None else self.augment.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        check_known_fields(cls, data, "training config")
        data = dict(data)
        if data.get("augment") is not None:
            data["augment"] = AugmentConfig.from_dict(data["augment"])
        return cls(**data)


#: Named starting points; command-line options override single fields.
PRESETS: dict[str, dict] = {
    # Tuned recipe: AdamW at 1e-3 with warm-up + cosine decay, a third of the draws forced onto tumour slices.
    "default": {},
    # The original project's recipe: batch 16, constant lr 1e-5, 20 full passes, plain shuffling, no
    # augmentation, no weight decay. Kept to reproduce its numbers, not because it is good.
    "original": {
        "epochs": 20,
        "batch_size": 16,
        "lr": 1e-5,
        "weight_decay": 0.0,
        "warmup_epochs": 0.0,
        "schedule": "constant",
        "max_steps_per_epoch": None,
        "oversample": None,
        "augment": None,
    },
    # Training on a 2-core CPU: short epochs so validation and training state come every couple of minutes.
    "cpu-fast": {"epochs": 30, "max_steps_per_epoch": 100, "warmup_epochs": 0.5, "workers": 1},
    # The recipe for the 27-case cross-validation on a lent GPU (Deep_Learning_Model/README.md, "Training on a
    # lent GPU"): region head, stronger intensity augmentation, training set resident on the device, batch 32,
    # longer training (up to 60 epochs of at most 100 steps; a lent GPU trains the epochs Deep_Learning_Model.gpu_plan
    # finds to fit its call, at least the shipped models' 65,280 slices per run). Every change is a candidate to
    # keep only if the CV shows it helps (the ablation rows).
    "cv27": {"head": "regions", "augment": STRONG_AUGMENT, "resident": True, "batch_size": 32, "epochs": 60,
             "max_steps_per_epoch": 100, "warmup_epochs": 2.0, "oversample": 0.33, "workers": 0, "val_every": 5},
}


def make_config(preset: str = "default", **overrides: object) -> TrainConfig:
    """``TrainConfig`` of ``preset`` with ``overrides`` applied on top."""
    if preset not in PRESETS:
        raise BratsError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    check_known_fields(TrainConfig, overrides, "training config")
    return replace(TrainConfig(), **{**PRESETS[preset], **overrides})

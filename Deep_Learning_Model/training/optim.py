"""AdamW and the learning-rate schedule: linear warm-up, then cosine decay (or constant), stepped per batch."""

from __future__ import annotations

import math
from functools import partial

from torch import nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR

from Deep_Learning_Model.training.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> AdamW:
    """AdamW with weight decay on weight matrices and kernels only (not on biases and normalisation scales)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float, cosine: bool) -> float:
    """Multiplier of the base learning rate for optimiser step ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: AdamW, cfg: TrainConfig, steps_per_epoch: int) -> LambdaLR:
    """Per-step schedule of ``cfg`` over ``cfg.epochs * steps_per_epoch`` steps (warm-up included)."""
    factor = partial(
        lr_factor,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        total_steps=cfg.epochs * steps_per_epoch,
        min_ratio=cfg.min_lr_ratio,
        cosine=cfg.schedule == "cosine",
    )
    return LambdaLR(optimizer, factor)

"""The training loop: epochs of optimiser steps, validation, per-epoch log and training state, resume, export.

Rank 0 alone validates, logs and writes files; the other ranks wait at a barrier at the end of each epoch.
An epoch is ``min(one pass over the training slices, cfg.max_steps_per_epoch)`` steps of ``batch_size`` slices
per rank. Every epoch reseeds torch, numpy and Python from ``(seed, epoch, rank)``; its batches come from
DataLoader workers or from the device-resident training set (``cfg.resident``), each batch augmented with a
generator seeded by ``(seed, epoch, rank, batch)`` (:mod:`Deep_Learning_Model.training.batches`), so a run
resumed from an epoch boundary continues exactly as the uninterrupted run would have (given the same device).
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import clip_grad_norm_
from torch.utils.data import DataLoader
from tqdm import tqdm

from brats_core.config import REGIONS
from brats_core.errors import BratsError
from brats_core.files import atomic_path
from Deep_Learning_Model.export import save_export
from Deep_Learning_Model.model import build_model, count_parameters
from Deep_Learning_Model.training.batches import (
    AugmentedBatches,
    Batch,
    ResidentSlices,
    batch_seed,
    derived_seed,
    epoch_batches,
)
from Deep_Learning_Model.training.config import TrainConfig
from Deep_Learning_Model.training.data import TrainingData
from Deep_Learning_Model.training.distributed import DistContext, all_gather_ints, all_reduce_sum, barrier
from Deep_Learning_Model.training.losses import build_loss
from Deep_Learning_Model.training.optim import build_optimizer, build_scheduler
from Deep_Learning_Model.training.precision import Precision, select_precision
from Deep_Learning_Model.training.runlog import validation_columns, write_json, write_log
from Deep_Learning_Model.training.sampler import SliceSampler
from Deep_Learning_Model.training.state import load_training_state, save_training_state
from Deep_Learning_Model.training.validation import validate

#: Progress-bar loss refresh interval (each refresh synchronises with the device).
BAR_REFRESH_STEPS = 10


def snapshot_path(out_dir: Path, epoch: int) -> Path:
    """Where a run with ``snapshot_every`` writes the export of ``epoch``."""
    return out_dir / "snapshots" / f"epoch_{epoch:03d}.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def steps_per_epoch(cfg: TrainConfig, num_slices: int, world_size: int) -> int:
    """Optimiser steps per epoch: one pass over ``num_slices`` (at least one step), capped by the config."""
    steps = max(num_slices // (cfg.batch_size * world_size), 1)
    return steps if cfg.max_steps_per_epoch is None else min(steps, cfg.max_steps_per_epoch)


@contextlib.contextmanager
def oom_guard(cfg: TrainConfig, device: torch.device, stage: str, batch_size: int, option: str) -> Iterator[None]:
    """Turn a CUDA out-of-memory error into a :class:`BratsError` that says what to change."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise BratsError(
            f"CUDA out of memory during {stage} on {device} ({cfg.model}, base width {cfg.base_width}, "
            f"{cfg.size}x{cfg.size} slices, batch {batch_size}): retry with a smaller {option} "
            f"(e.g. {max(batch_size // 2, 1)}), a smaller --size or --base-width"
            + ("" if cfg.amp else ", or --amp")
        ) from exc


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: nn.Module,
    precision: Precision,
    grad_clip: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step; returns the (detached) loss and the gradient norm before clipping.

    Gradients are unscaled before the norm is measured and clipped, so clipping acts on the true gradients
    under fp16 + GradScaler too (a no-op for bf16 and fp32, whose scaler is disabled); the scaler then skips
    the step when the gradients overflowed.
    """
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        logits = model(images)
    loss = loss_fn(logits, targets)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = clip_grad_norm_(model.parameters(), grad_clip if grad_clip is not None else math.inf)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), norm.detach()


class Trainer:
    """Owns the model, optimiser, schedule, scaler and sampler of one run, and its history on rank 0."""

    def __init__(self, cfg: TrainConfig, data: TrainingData, ctx: DistContext, device: torch.device) -> None:
        self.cfg = cfg
        self.data = data
        self.ctx = ctx
        self.precision = select_precision(device, cfg.amp, cfg.channels_last)
        self.model_config = cfg.model_config()
        seed_everything(cfg.seed)
        self.net = build_model(self.model_config).to(device, memory_format=self.precision.memory_format)
        self.model: nn.Module = (
            DistributedDataParallel(self.net, device_ids=[device.index] if device.type == "cuda" else None)
            if ctx.is_distributed
            else self.net
        )
        self.steps_per_epoch = steps_per_epoch(cfg, len(data.train), ctx.world_size)
        self.optimizer = build_optimizer(self.net, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.scaler = self.precision.grad_scaler()
        self.loss_fn = build_loss(cfg.head, cfg.ce_weight, cfg.dice_weight, cfg.dice_over)
        #: The training slices on the device (``cfg.resident``), else None (DataLoader workers).
        self.resident = ResidentSlices(data.train, device) if cfg.resident else None
        self.sampler = SliceSampler(
            data.train.has_tumour,
            self.steps_per_epoch * cfg.batch_size,
            cfg.oversample,
            cfg.seed,
            ctx.rank,
            ctx.world_size,
        )
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict] = []
        self.best: dict = {"epoch": None, "mean_dice": None, "metrics": None}
        self.samples_per_rank: list[int] = []

    @property
    def device(self) -> torch.device:
        return self.precision.device

    @property
    def out_dir(self) -> Path:
        return self.cfg.out_dir

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything a training state holds (see :mod:`Deep_Learning_Model.training.state`)."""
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "config": self.cfg.to_dict(),
            "model_config": self.model_config.to_dict(),
            "preprocess": self.data.preprocess.to_dict(),
            "metrics": {"history": self.history, "best": self.best},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a training state written by :meth:`state_dict` (same model, optimiser and schedule)."""
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # a disabled scaler (bf16/fp32) saves {}: an fp16 continuation starts a fresh one
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["metrics"]["history"])
        self.best = dict(state["metrics"]["best"])

    # ------------------------------------------------------------------------------------------ epochs
    def _loader(self, epoch: int) -> Iterable[Batch]:
        """The epoch's augmented batches: on the device (resident) or from DataLoader workers."""
        cfg = self.cfg
        batches = epoch_batches(self.sampler, epoch, cfg.batch_size)
        seeds = [batch_seed(cfg.seed, epoch, self.ctx.rank, b) for b in range(len(batches))]
        if self.resident is not None:
            return self.resident.batches(batches, cfg.augment, seeds)
        return DataLoader(
            AugmentedBatches(self.data.train, batches, cfg.augment, seeds),
            batch_size=None,
            num_workers=cfg.workers,
            pin_memory=self.device.type == "cuda",
        )

    def train_epoch(self, epoch: int) -> dict:
        """Run one epoch; returns its statistics summed over all ranks."""
        cfg, device = self.cfg, self.device
        seed_everything(derived_seed(cfg.seed, epoch, self.ctx.rank))
        self.model.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        norm_sum = torch.zeros((), device=device, dtype=torch.float64)
        finite_norms = torch.zeros((), device=device, dtype=torch.float64)
        samples = steps = 0
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=None if self.ctx.is_main else True,  # None: no bar when stderr is not a terminal (logs)
            leave=False,
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        with bar, oom_guard(cfg, device, "training", cfg.batch_size, "--batch-size"):
            for images, targets in self._loader(epoch):
                images = images.to(device, non_blocking=True, memory_format=self.precision.memory_format)
                targets = targets.to(device, non_blocking=True)
                loss, norm = train_step(
                    self.model, images, targets, self.optimizer, self.scaler, self.loss_fn, self.precision,
                    cfg.grad_clip,
                )
                self.scheduler.step()
                self.global_step += 1
                steps += 1
                samples += images.shape[0]
                loss_sum += loss
                finite = torch.isfinite(norm)
                norm_sum += torch.where(finite, norm, 0.0)
                finite_norms += finite
                bar.update()
                if self.ctx.is_main and steps % BAR_REFRESH_STEPS == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        seconds = time.perf_counter() - start
        total_loss, total_norm, total_finite, total_samples, total_steps = all_reduce_sum(
            [loss_sum.item(), norm_sum.item(), finite_norms.item(), samples, steps], device
        )
        self.samples_per_rank = all_gather_ints(samples, self.ctx, device)
        return {
            "epoch": epoch + 1,
            "train_loss": total_loss / max(total_steps, 1),
            "grad_norm": total_norm / total_finite if total_finite else math.nan,
            "lr": self.scheduler.get_last_lr()[0],
            "samples": int(total_samples),
            "seconds": seconds,
            "slices_per_s": total_samples / seconds,
        }

    def _validate(self) -> dict:
        cfg = self.cfg
        with oom_guard(cfg, self.device, "validation", cfg.val_batch_size, "--val-batch-size"):
            return validate(
                self.net, self.data.val, self.device, cfg.context, cfg.val_batch_size, cfg.val_tta, cfg.amp, cfg.head
            )

    def _end_epoch(self, row: dict, last_epoch: int) -> None:
        """Rank 0: validate when due (always at ``last_epoch``), track the best model, write log and training state."""
        cfg, epoch = self.cfg, row["epoch"]
        metrics = None
        if self.data.val and (epoch % cfg.val_every == 0 or epoch == last_epoch):
            start = time.perf_counter()
            metrics = self._validate()
            row.update(validation_columns(metrics), val_seconds=time.perf_counter() - start)
            if self.best["mean_dice"] is None or metrics["mean_dice"] > self.best["mean_dice"]:
                self.best = {"epoch": epoch, "mean_dice": metrics["mean_dice"], "metrics": metrics}
        elif not self.data.val:  # nothing to select on: the latest model is the best one
            self.best = {"epoch": epoch, "mean_dice": None, "metrics": None}
        self.history.append(row)
        write_log(self.out_dir / "log.csv", self.history)
        last = save_training_state(self.out_dir / "last.pt", self.state_dict())
        if self.best["epoch"] == epoch:
            with atomic_path(self.out_dir / "best.pt") as tmp:
                shutil.copyfile(last, tmp)
        if cfg.snapshot_every and epoch % cfg.snapshot_every == 0:
            self._save_export(self.net, snapshot_path(self.out_dir, epoch), metrics or {},
                              {"train_config": cfg.to_dict(), "train_cases": self.data.train_ids,
                               "val_cases": self.data.val_ids, "epochs_trained": epoch, "snapshot": True})
        message = f"epoch {epoch}/{cfg.epochs}: loss {row['train_loss']:.4f}, {row['slices_per_s']:.1f} slices/s"
        if metrics is not None:
            dice = ", ".join(f"{r} {metrics[r]['dice']:.3f}" for r in REGIONS)
            message += f", val Dice {dice} (mean {metrics['mean_dice']:.3f}, best epoch {self.best['epoch']})"
        tqdm.write(message, file=sys.stderr)

    def fit(self, stop_after: int | None = None, deadline: float | None = None) -> None:
        """Train from the current epoch to ``cfg.epochs`` (or for ``stop_after`` epochs at most).

        ``deadline`` (a ``time.monotonic()`` value): stop after the epoch past which another one (twice the
        last epoch's time, validation included) would not fit; that epoch validates and writes ``last.pt``.
        """
        end = self.cfg.epochs if stop_after is None else min(self.cfg.epochs, self.epoch + stop_after)
        epoch, last_seconds = self.epoch, 0.0
        while epoch < end:
            start = time.monotonic()
            row = self.train_epoch(epoch)
            self.epoch = epoch = epoch + 1
            if deadline is not None and epoch < end:
                need = 2.0 * max(last_seconds, time.monotonic() - start)
                if all_reduce_sum([float(time.monotonic() + need > deadline)], self.device)[0] > 0:
                    end = epoch  # every rank stops here: this epoch ends the invocation
            if self.ctx.is_main:
                self._end_epoch(row, end)
            barrier()
            last_seconds = time.monotonic() - start

    # ------------------------------------------------------------------------------------------ outputs
    def export(self, info: dict) -> Path:
        """Rank 0: write the inference export (fp16 weights + configs) of the best epoch's model."""
        best = load_training_state(self.out_dir / "best.pt")
        model = build_model(self.model_config)
        model.load_state_dict(best["model"])
        info = {**info, "best_epoch": self.best["epoch"], "epochs_trained": self.epoch}
        return self._save_export(model, self.cfg.export_path, self.best["metrics"] or {}, info)

    def _save_export(self, model: nn.Module, path: Path, metrics: dict, info: dict) -> Path:
        return save_export(path, model, self.model_config, self.data.preprocess, metrics, info)

    def summary(self, wall_seconds: float) -> dict:
        rates = [row["slices_per_s"] for row in self.history]
        return {
            "model": self.cfg.model,
            "parameters": count_parameters(self.net),
            "epochs_trained": self.epoch,
            "epochs": self.cfg.epochs,
            "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "wall_seconds": wall_seconds,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "precision": self.precision.describe(),
            "world_size": self.ctx.world_size,
            "samples_per_rank_last_epoch": self.samples_per_rank,
            "mean_slices_per_s": float(np.mean(rates)) if rates else None,
            "train_cases": self.data.train_ids,
            "val_cases": self.data.val_ids,
            "best_epoch": self.best["epoch"],
            "best_mean_dice": self.best["mean_dice"],
            "best_metrics": self.best["metrics"],
            "export": str(self.cfg.export_path),
            "torch": torch.__version__,
        }

    def write_summary(self, wall_seconds: float) -> None:
        write_json(self.out_dir / "train_summary.json", self.summary(wall_seconds))

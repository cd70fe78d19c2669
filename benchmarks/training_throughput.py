"""Training throughput (slices/s) of the U-Net and the U-Net + SSPP: fp32 against mixed precision + channels_last.

Each measurement builds a fresh model and AdamW, runs ``--warmup`` optimiser steps (oneDNN/cuDNN pick their
kernels there), then times ``--steps`` steps of the real training step
(:func:`Deep_Learning_Model.training.loop.train_step`: forward, Dice + CE loss, backward, clipping, AdamW) on
random batches already in memory, so data loading is excluded; augmentation cost per worker (batches of
``--batch-size``, every transform of ``augment_batch``) is measured separately; ``training_gpu.py`` measures
training with the data included. On CPU the modes are ``fp32`` and ``bf16_channels_last``; on CUDA ``fp32`` and
``amp_channels_last`` (bf16, or fp16 + GradScaler). The process is pinned to ``--cores`` cores
(``_common.pin_cores``, which also sets ``OMP_WAIT_POLICY=PASSIVE``) before torch is imported; the load
average is reported because other processes on a shared machine slow every figure. The last stdout line is
one JSON object.

    .venv/bin/python benchmarks/training_throughput.py [--steps 5] [--cores 2] [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _common import malloc_tuning, pin_cores

from brats_app.registry import models_of


def measure(arch: str, precision, args: argparse.Namespace) -> float:
    """Training slices/s of one model in one precision mode (a ``training.precision.Precision``)."""
    import torch

    from Deep_Learning_Model.model import build_model
    from Deep_Learning_Model.training.config import TrainConfig
    from Deep_Learning_Model.training.loop import train_step
    from Deep_Learning_Model.training.losses import DiceCELoss
    from Deep_Learning_Model.training.optim import build_optimizer

    torch.manual_seed(0)
    cfg = TrainConfig(model=arch, base_width=args.base_width, size=args.size, batch_size=args.batch_size)
    model_config = cfg.model_config()
    model = build_model(model_config).to(precision.device, memory_format=precision.memory_format).train()
    optimizer = build_optimizer(model, cfg)
    scaler = precision.grad_scaler()
    loss_fn = DiceCELoss()
    shape = (args.batch_size, model_config.channels, args.size, args.size)
    images = torch.randn(shape, device=precision.device).contiguous(memory_format=precision.memory_format)
    targets = torch.randint(0, 4, (args.batch_size, args.size, args.size), device=precision.device)

    def step() -> None:
        train_step(model, images, targets, optimizer, scaler, loss_fn, precision, cfg.grad_clip)

    for _ in range(args.warmup):
        step()
    if precision.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if precision.device.type == "cuda":
        torch.cuda.synchronize()
    return args.batch_size * args.steps / (time.perf_counter() - start)


def augment_throughput(size: int, batch_size: int, seconds: float = 2.0) -> float:
    """Slices/s one DataLoader worker (one torch thread) augments, batch by batch, with every transform applied."""
    import torch

    from Deep_Learning_Model.training.augment import augment_batch
    from Deep_Learning_Model.training.config import AugmentConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = AugmentConfig(flip_prob=1.0, affine_prob=1.0, intensity_prob=1.0, gamma_prob=1.0, noise_prob=1.0,
                           blur_prob=1.0)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 4, size, size, generator=generator)
    targets = torch.randint(0, 4, (batch_size, size, size), generator=generator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        augment_batch(images, targets, config, generator)
        count += batch_size
    rate = count / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    return rate


def run(args: argparse.Namespace, cores: int) -> dict:
    import torch

    from Deep_Learning_Model.training.precision import Precision, select_device, select_precision

    device = select_device(args.device)
    modes = {"fp32": Precision(device, None, channels_last=False)}
    if device.type == "cpu":
        modes["bf16_channels_last"] = Precision(device, torch.bfloat16, channels_last=True)
    else:
        modes["amp_channels_last"] = select_precision(device, amp=True, channels_last=True)
    results: dict[str, dict[str, float]] = {}
    for arch in args.models:
        results[arch] = {}
        for name, precision in modes.items():
            rate = measure(arch, precision, args)
            results[arch][name] = round(rate, 2)
            print(f"{arch:5s} {name:20s} {rate:8.2f} slices/s", flush=True)
        fast = max(v for k, v in results[arch].items() if k != "fp32")
        results[arch]["speedup"] = round(fast / results[arch]["fp32"], 2)
    augment = augment_throughput(args.size, args.batch_size)
    print(f"augmentation: {augment:.0f} slices/s per worker", flush=True)
    return {
        "benchmark": "training_throughput",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cores": cores,
        "threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "malloc_tuning": malloc_tuning(),
        "base_width": args.base_width,
        "size": args.size,
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "slices_per_s": results,
        "augment_slices_per_s_per_worker": round(augment, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    deep = models_of("Deep_Learning_Model", composites=False)
    parser.add_argument("--models", nargs="+", default=list(deep), choices=deep)
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed steps (a rough figure)")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.steps = 1, 2
    cores = pin_cores(args.cores)
    print(json.dumps(run(args, cores)))


if __name__ == "__main__":
    main()

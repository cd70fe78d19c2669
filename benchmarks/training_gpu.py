"""Training throughput with the data included: the device-resident training set on a GPU, DataLoader workers on CPU.

Every figure runs the real optimiser step (:func:`Deep_Learning_Model.training.loop.train_step`: mixed precision,
channels_last, the loss of the head, clipping, AdamW) on batches made as training makes them, for ``--steps``
timed steps after ``--warmup`` untimed ones:

- ``resident`` (CUDA only): :class:`ResidentSlices` holds every slice on the GPU; each batch's indices come from
  the oversampling :class:`SliceSampler`, its slices are gathered and augmented there (:func:`augment_batch`,
  the ``cv27`` preset's strong augmentation) with no host work per slice;
- ``dataloader``: :class:`AugmentedBatches` in ``--workers`` DataLoader workers (the CPU path; on CUDA with
  pinned memory, as the shipped GPU runs were fed);
- ``fixed_batch``: one batch already on the device, stepped again and again: the model's own ceiling;
- ``concurrent`` (``--concurrent N``): N processes each train on the resident path at once, as
  ``python -m Deep_Learning_Model.cv all --parallel N`` runs the folds; the figure is the slices/s of all of them
  together (every slice timed, from the first process's start to the last one's end), which sizes that plan.

Data: ``--from-cache DIR`` (a slice-cache folder, every case in it) or synthetic slices of the same layout
(``--cases`` x ``--slices`` slices at ``--size`` px; the 27-case cache has 3,742 slices). Targets on one
H100/H200, data included: 5,000 slices/s (U-Net) and 2,500 (SSPP). The last stdout line is one JSON object.

    python benchmarks/training_gpu.py                         # CUDA: resident, dataloader, fixed batch
    python benchmarks/training_gpu.py --device cpu --cores 2  # CPU: dataloader and fixed batch
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from types import SimpleNamespace

from _common import pin_cores

from brats_app.registry import models_of

#: The targets on one H100/H200, data included: the U-Net and the (slower) U-Net + SSPP.
UNET_TARGET, SSPP_TARGET = 5000.0, 2500.0


def target(arch: str) -> float:
    return UNET_TARGET if arch == "unet" else SSPP_TARGET


def synthetic_entries(cases: int, slices: int, size: int, seed: int = 0) -> list:
    """Cache-entry look-alikes: a disc of brain with a tumour blob (labels 2, 1 and 4) in half the slices."""
    import numpy as np

    rng = np.random.default_rng(seed)
    grid = np.hypot(*np.meshgrid(np.arange(size) - size / 2, np.arange(size) - size / 2, indexing="ij"))
    brain = grid < 0.4 * size
    entries = []
    for n in range(cases):
        images = (rng.standard_normal((slices, 4, size, size)) * brain).astype(np.float16)
        labels = np.zeros((slices, size, size), dtype=np.uint8)
        tumour = slice(slices // 4, 3 * slices // 4)
        labels[tumour][:, grid < 0.15 * size] = 2
        labels[tumour][:, grid < 0.08 * size] = 1
        labels[tumour][:, (grid > 0.06 * size) & (grid < 0.08 * size)] = 4
        entries.append(SimpleNamespace(
            case_id=f"synthetic_{n}", path=f"synthetic_{n}", images=images, labels=labels, num_slices=slices,
            brain_slices=np.arange(slices), tumour_slices=np.arange(slices)[tumour],
        ))  # fmt: skip
    return entries


def batches(path: str, dataset, args: argparse.Namespace, device):
    """An iterator over ``warmup + steps`` training batches of ``path``."""
    import torch
    from torch.utils.data import DataLoader

    from Deep_Learning_Model.training.batches import (
        AugmentedBatches,
        ResidentSlices,
        batch_seed,
        epoch_batches,
    )
    from Deep_Learning_Model.training.config import STRONG_AUGMENT
    from Deep_Learning_Model.training.sampler import SliceSampler

    count = args.warmup + args.steps
    sampler = SliceSampler(dataset.has_tumour, count * args.batch_size, oversample=0.33, seed=0)
    rows = epoch_batches(sampler, 0, args.batch_size)
    seeds = [batch_seed(0, 0, 0, b) for b in range(count)]
    if path == "resident":
        return ResidentSlices(dataset, device).batches(rows, STRONG_AUGMENT, seeds)
    if path == "dataloader":
        return iter(DataLoader(AugmentedBatches(dataset, rows, STRONG_AUGMENT, seeds), batch_size=None,
                               num_workers=args.workers, pin_memory=device.type == "cuda"))
    images, targets = ResidentSlices(dataset, device).gather(torch.from_numpy(rows[0]))
    return iter([(images, targets)] * count)


def measure(arch: str, path: str, dataset, precision, args: argparse.Namespace, barrier=None) -> float:
    """Training slices/s of ``arch`` fed by ``path``, data included (``barrier``: wait there before timing;
    then the wall-clock ``(start, end)`` of the timed steps is returned instead)."""
    import torch

    from Deep_Learning_Model.model import build_model
    from Deep_Learning_Model.training.config import make_config
    from Deep_Learning_Model.training.loop import train_step
    from Deep_Learning_Model.training.losses import build_loss
    from Deep_Learning_Model.training.optim import build_optimizer

    torch.manual_seed(0)
    cfg = make_config("cv27", model=arch, base_width=args.base_width, size=args.size, batch_size=args.batch_size,
                      head=args.head, context=args.context)
    device = precision.device
    model = build_model(cfg.model_config()).to(device, memory_format=precision.memory_format).train()
    optimizer, scaler, loss_fn = build_optimizer(model, cfg), precision.grad_scaler(), build_loss(cfg.head)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = None
    for step, (images, targets) in enumerate(batches(path, dataset, args, device)):
        if step == args.warmup:
            sync()
            if barrier is not None:
                barrier.wait()
                wall = time.time()
            start = time.perf_counter()
        images = images.to(device, non_blocking=True, memory_format=precision.memory_format)
        train_step(model, images, targets.to(device, non_blocking=True), optimizer, scaler, loss_fn, precision,
                   cfg.grad_clip)
    sync()
    if barrier is not None:
        return wall, time.time()
    return args.batch_size * args.steps / (time.perf_counter() - start)


def _concurrent_worker(job: tuple) -> tuple[float, float]:
    arch, args, barrier = job
    from Deep_Learning_Model.training.precision import select_device, select_precision

    precision = select_precision(select_device(args.device), amp=True, channels_last=True)
    return measure(arch, "resident", _dataset(args), precision, args, barrier)


def concurrent(arch: str, args: argparse.Namespace) -> float:
    """Slices/s of ``args.concurrent`` processes training ``arch`` at once on the resident path."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    n = args.concurrent
    with context.Manager() as manager, ProcessPoolExecutor(n, mp_context=context) as pool:
        barrier = manager.Barrier(n, timeout=300)  # a worker that died breaks it instead of hanging the call
        spans = list(pool.map(_concurrent_worker, [(arch, args, barrier)] * n))
    return n * args.batch_size * args.steps / (max(end for _, end in spans) - min(start for start, _ in spans))


def _dataset(args: argparse.Namespace):
    from brats_core.cache import open_cache
    from brats_core.dataset import SliceDataset

    entries = open_cache(args.from_cache) if args.from_cache else synthetic_entries(args.cases, args.slices, args.size)
    return SliceDataset(entries, context=args.context, slices="brain")


def run(args: argparse.Namespace, cores: int) -> dict:
    import torch

    from Deep_Learning_Model.training.precision import select_device, select_precision

    device = select_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = select_precision(device, amp=True, channels_last=True)
    source = str(args.from_cache) if args.from_cache else f"synthetic: {args.cases} cases x {args.slices} slices"
    dataset = _dataset(args)
    paths = args.paths or (["resident", "dataloader", "fixed_batch"] if device.type == "cuda"
                           else ["dataloader", "fixed_batch"])
    results: dict[str, dict[str, float]] = {}
    for arch in args.models:
        results[arch] = {}
        for path in paths:
            rate = measure(arch, path, dataset, precision, args)
            results[arch][path] = round(rate, 1)
            print(f"{arch:5s} {path:12s} {rate:10.1f} slices/s", flush=True)
        if args.concurrent:
            rate = concurrent(arch, args)
            results[arch][f"concurrent_{args.concurrent}"] = round(rate, 1)
            print(f"{arch:5s} {args.concurrent} at once {rate:10.1f} slices/s (all processes together)", flush=True)
    out = {
        "benchmark": "training_gpu",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision.describe(),
        "torch": torch.__version__,
        "cores": cores,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "data": source,
        "training_slices": len(dataset),
        "head": args.head,
        "base_width": args.base_width,
        "size": args.size,
        "context": args.context,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "timed_steps": args.steps,
        "slices_per_s": results,
    }
    if device.type == "cuda" and "resident" in paths:
        out["targets_slices_per_s"] = {arch: target(arch) for arch in results}
        out["meets_targets"] = all(results[arch]["resident"] >= target(arch) for arch in results)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    deep = models_of("Deep_Learning_Model", composites=False)
    parser.add_argument("--models", nargs="+", default=list(deep), choices=deep)
    parser.add_argument("--from-cache", help="slice-cache folder to train on (default: synthetic slices)")
    parser.add_argument("--cases", type=int, default=None, help="synthetic cases (default 27 on CUDA, 2 on CPU)")
    parser.add_argument("--slices", type=int, default=139, help="slices per synthetic case")
    parser.add_argument("--head", default="regions", choices=["softmax", "regions"])
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--context", type=int, default=None, help="slices each side (default: the cv27 preset's)")
    parser.add_argument("--batch-size", type=int, default=32, help="default: the cv27 preset's")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 8 on CUDA, 1 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 20 on CUDA, 1 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 100 on CUDA, 3 on CPU)")
    parser.add_argument("--cores", type=int, default=None, help="CPU cores to pin (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--paths", nargs="+", choices=["resident", "dataloader", "fixed_batch"],
                        help="batch paths to time (default: all three on CUDA, dataloader and fixed_batch on CPU)")
    parser.add_argument("--concurrent", type=int, default=0, metavar="N",
                        help="also time N processes training at once on the resident path (cv all --parallel N)")
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed steps (a rough figure)")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.steps = 1, 2
    if args.context is None:
        from Deep_Learning_Model.training.config import make_config

        args.context = make_config("cv27").context
    cores = pin_cores(args.cores or len(os.sched_getaffinity(0)))
    import torch

    cuda = args.device != "cpu" and torch.cuda.is_available()
    for name, gpu, cpu in (("cases", 27, 2), ("workers", 8, 1), ("warmup", 20, 1), ("steps", 100, 3)):
        if getattr(args, name) is None:
            setattr(args, name, gpu if cuda else cpu)
    print(json.dumps(run(args, cores)))


if __name__ == "__main__":
    from brats_core.errors import BratsError

    try:
        main()
    except BratsError as exc:
        print(f"training_gpu.py: error: {exc}", file=sys.stderr)
        sys.exit(1)

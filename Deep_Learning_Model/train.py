"""Train the U-Net or U-Net + SSPP on cached axial slices: ``brats train unet|sspp`` or this script.

    python Deep_Learning_Model/train.py --model unet --data ../shared/data/brats_dev --out runs/unet
    torchrun --nproc_per_node=2 Deep_Learning_Model/train.py --model sspp --from-cache CACHE --out runs/sspp
    python Deep_Learning_Model/train.py --resume runs/unet/last.pt

Writes to ``--out``: ``config.json``, ``log.csv`` (one row per epoch), ``last.pt`` (full training state),
``best.pt`` (best validation mean Dice), ``train_summary.json`` and the inference export (``--export``,
default ``<out>/export.pt``) of the best model. Options left out come from ``--preset`` (see
:mod:`Deep_Learning_Model.training.config`); with ``--resume`` they come from the training state.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import torch

from brats_core.allocator import keep_freed_memory
from brats_core.errors import BratsError
from brats_core.files import check_output_paths, describe_os_error
from brats_core.helptext import PlainHelpFormatter, description
from brats_core.provenance import this_machine, today
from Deep_Learning_Model.model import ARCHS, count_parameters
from Deep_Learning_Model.training.config import (
    PRESETS,
    STRONG_AUGMENT,
    AugmentConfig,
    TrainConfig,
    make_config,
)
from Deep_Learning_Model.training.data import TrainingData, load_training_data
from Deep_Learning_Model.training.distributed import (
    DistContext,
    barrier,
    context_from_env,
    destroy_process_group,
    init_process_group,
)
from Deep_Learning_Model.training.loop import Trainer
from Deep_Learning_Model.training.precision import select_device
from Deep_Learning_Model.training.runlog import write_json
from Deep_Learning_Model.training.state import load_training_state

#: Fields a resumed run may change: where it runs and writes, how often it validates. Anything else would
#: not continue the same run.
RESUME_OVERRIDABLE = frozenset(
    {"device", "amp", "channels_last", "workers", "data", "from_cache", "cache_dir", "out", "export",
     "val_every", "val_batch_size", "val_tta", "snapshot_every"}
)
#: ``--augment NAME``: the augmentation settings it selects.
AUGMENTATIONS: dict[str, AugmentConfig] = {"default": AugmentConfig(), "strong": STRONG_AUGMENT}


def _none_if_zero(text: str) -> int | None:
    value = int(text)
    return value or None


def _fraction_or_none(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _augmentation(name: str) -> AugmentConfig:
    if name not in AUGMENTATIONS:
        raise argparse.ArgumentTypeError(f"unknown augmentation {name!r}; choose {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def _positive_or_none(text: str) -> float | None:
    value = float(text)
    return value if value > 0 else None


def build_parser(model: str | None = None) -> argparse.ArgumentParser:
    """Options map one to one onto :class:`TrainConfig` fields; unset options are absent from the namespace.

    ``model``: the parser of ``brats train <model>``, which fixes the network (no ``--model`` option).
    """
    defaults = TrainConfig()
    presets = "; ".join(f"{name}: {', '.join(f'{k}={v}' for k, v in values.items()) or 'the defaults'}"
                        for name, values in PRESETS.items())
    parser = argparse.ArgumentParser(
        prog=f"brats train {model}" if model else "brats train unet|sspp",
        description=description(__doc__),
        formatter_class=PlainHelpFormatter,
        argument_default=argparse.SUPPRESS,
        epilog=(
            f"Unset options come from --preset. Defaults: epochs {defaults.epochs}, max steps per epoch "
            f"{defaults.max_steps_per_epoch}, batch {defaults.batch_size}, lr {defaults.lr}, weight decay "
            f"{defaults.weight_decay}, warm-up {defaults.warmup_epochs} epoch, grad clip {defaults.grad_clip}, "
            f"base width {defaults.base_width}, context {defaults.context}, size {defaults.size}, oversample "
            f"{defaults.oversample}, workers {defaults.workers} (the cores available, at most 4), seed {defaults.seed}. "
            f"Presets: {presets}."
        ),
    )
    add = parser.add_argument
    if model is None:
        add("--model", choices=ARCHS, help="network to train (required unless --resume)")
    else:
        parser.set_defaults(model=model)
    add("--data", help="folder or .zip of NIfTI cases (cached on first use)")
    add("--from-cache", help="train from this slice-cache folder (<cache root>/<key>) without NIfTI")
    add("--split", help="patient-level split JSON (default splits/brats_dev.json)")
    add("--cache-dir", help="cache root for --data (default: BRATS_CACHE_DIR or .cache/slices)")
    add("--out", help="output folder (default results/runs/<model>)")
    add("--export", help="inference export path (default <out>/export.pt)")
    add("--preset", choices=tuple(PRESETS), help="starting configuration (default: default)")
    add("--epochs", type=int)
    add("--max-steps-per-epoch", type=_none_if_zero, help="cap on the steps of an epoch (0: one full pass)")
    add("--batch-size", type=int)
    add("--lr", type=float, help="peak learning rate of AdamW")
    add("--weight-decay", type=float)
    add("--warmup-epochs", type=float)
    add("--grad-clip", type=_positive_or_none, help="max gradient norm (0: no clipping)")
    add("--base-width", type=int, help="channels of the first U-Net stage")
    add("--context", type=int, help="neighbouring slices on each side fed as extra channels")
    add("--size", type=int, help="in-plane slice size (default 128; with --from-cache: the cache's)")
    add("--oversample", type=_fraction_or_none, help="fraction of tumour-slice draws (none: plain shuffle)")
    add("--head", choices=("softmax", "regions"), help="softmax over 4 classes or sigmoid WT/TC/ET regions")
    add("--augment", type=_augmentation, metavar="{default,strong}",
        help="augmentation: default (flips, rotation/scaling, intensity) or strong (+ gamma, noise, blur)")
    add("--no-augment", dest="augment", action="store_const", const=None, help="disable augmentation")
    add("--resident", action=argparse.BooleanOptionalAction,
        help="keep the training slices on the device and augment there in batches (no DataLoader workers)")
    add("--device", help="auto | cpu | cuda | cuda:N")
    add("--amp", action=argparse.BooleanOptionalAction, help="mixed precision (bf16, or fp16 + GradScaler)")
    add("--channels-last", action=argparse.BooleanOptionalAction)
    add("--workers", type=int, help="DataLoader worker processes")
    add("--seed", type=int)
    add("--deterministic", action=argparse.BooleanOptionalAction, help="deterministic kernels (slower on CUDA)")
    add("--val-every", type=int, help="validate every N epochs (and always after the last one)")
    add("--val-batch-size", type=int)
    add("--val-tta", action=argparse.BooleanOptionalAction, help="flip test-time augmentation in validation")
    add("--snapshot-every", type=_none_if_zero, metavar="N",
        help="also export the model every N epochs to <out>/snapshots/epoch_<N>.pt (0: never)")
    add("--resume", help="continue the run of this training state (last.pt)")
    add("--stop-after", type=int, help="run at most N epochs in this invocation (resume later)")
    add("--time-limit", type=float, metavar="MINUTES",
        help="stop after the last epoch that ends within MINUTES of the start (resume later)")
    return parser


def resume_config(saved: dict, overrides: dict, source: str) -> TrainConfig:
    """The saved config of a training state with the allowed ``overrides``; other changes raise BratsError."""
    cfg = TrainConfig.from_dict(saved)
    changed = sorted(k for k, v in overrides.items() if k not in RESUME_OVERRIDABLE and getattr(cfg, k) != v)
    if changed:
        raise BratsError(
            f"{source}: a resumed run keeps its configuration; cannot change {', '.join(changed)} "
            f"(only {', '.join(sorted(RESUME_OVERRIDABLE))} may differ)"
        )
    return replace(cfg, **overrides)


def _configure_determinism(cfg: TrainConfig, device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def _adopt_cache_size(cfg: TrainConfig, data: TrainingData, explicit: set[str]) -> TrainConfig:
    """With ``--from-cache`` the slice size is the cache's unless ``--size`` says otherwise (then it must match).

    ``--data`` builds its cache at ``cfg.size``, so only ``--from-cache`` can differ.
    """
    size = data.preprocess.size
    if size == cfg.size:
        return cfg
    if "size" in explicit:
        raise BratsError(f"{cfg.from_cache}: cached slices are {size}px but the run uses --size {cfg.size}")
    return replace(cfg, size=size)


def _describe(trainer: Trainer) -> str:
    cfg, data = trainer.cfg, trainer.data
    return (
        f"training {cfg.model} ({count_parameters(trainer.net) / 1e6:.2f}M parameters, base width "
        f"{cfg.base_width}, context {cfg.context}, {cfg.size}px) on {trainer.precision.describe()}, "
        f"{trainer.ctx.world_size} process(es){' with DistributedDataParallel' if trainer.ctx.is_distributed else ''}\n"
        f"data: {len(data.train_ids)} train cases ({len(data.train)} slices, {int(data.train.has_tumour.sum())} "
        f"with tumour), {len(data.val_ids)} val cases; split {data.split_path}\n"
        f"{cfg.epochs} epochs x {trainer.steps_per_epoch} steps x batch {cfg.batch_size} per process; "
        f"output {cfg.out_dir}"
    )


def _hardware(trainer: Trainer) -> str:
    """The machine of the export's provenance: GPU name (or CPU), process count, precision."""
    device = trainer.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else this_machine()
    return f"{trainer.ctx.world_size}x {name} (torch {torch.__version__}), {trainer.precision.describe()}"


def run(overrides: dict, ctx: DistContext) -> int:
    """Train with the options in ``overrides`` (parsed command line) in this process of the job ``ctx``."""
    keep_freed_memory()
    overrides = dict(overrides)
    preset = overrides.pop("preset", None)
    resume = overrides.pop("resume", None)
    stop_after = overrides.pop("stop_after", None)
    time_limit = overrides.pop("time_limit", None)
    deadline = None if time_limit is None else time.monotonic() + 60.0 * time_limit
    explicit = set(overrides)
    state = None
    if resume is not None:
        if preset is not None:
            raise BratsError("--preset cannot be combined with --resume (the training state holds the configuration)")
        state = load_training_state(resume)
        cfg = resume_config(state["config"], overrides, resume)
    else:
        if "model" not in overrides:
            raise BratsError("--model unet|sspp is required (or --resume a training state)")
        cfg = make_config(preset or "default", **overrides)
    cfg = replace(cfg, out=str(cfg.out_dir), export=str(cfg.export_path))
    check_output_paths(out=cfg.out_dir / "config.json", export=cfg.export_path)
    if state is None and (cfg.out_dir / "last.pt").exists():
        raise BratsError(
            f"{cfg.out_dir} already holds a run (last.pt): continue it with --resume {cfg.out_dir / 'last.pt'} "
            "or choose another --out"
        )
    device = select_device(cfg.device, ctx)
    _configure_determinism(cfg, device)
    init_process_group(ctx, device)
    try:
        data = load_training_data(cfg, ctx)
        cfg = _adopt_cache_size(cfg, data, explicit)
        trainer = Trainer(cfg, data, ctx, device)
        if state is not None:
            trainer.load_state_dict(state)
        if ctx.is_main:
            cfg.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(cfg.out_dir / "config.json", cfg.to_dict())
            print(_describe(trainer), file=sys.stderr)
        start = time.perf_counter()
        trainer.fit(stop_after, deadline)
        if ctx.is_main:
            seconds = time.perf_counter() - start
            info = {"train_config": cfg.to_dict(), "train_cases": data.train_ids, "val_cases": data.val_ids,
                    "train_seconds": round(seconds, 1), "hardware": _hardware(trainer), "created": today()}
            export = trainer.export(info)
            trainer.write_summary(seconds)
            best = trainer.best
            score = "" if best["mean_dice"] is None else f" (val mean Dice {best['mean_dice']:.4f})"
            print(f"best epoch {best['epoch']}{score}; export written to {export}", file=sys.stderr)
            if trainer.epoch < cfg.epochs:
                print(f"stopped after epoch {trainer.epoch} of {cfg.epochs}; continue with "
                      f"--resume {cfg.out_dir / 'last.pt'}", file=sys.stderr)
        barrier()
    finally:
        destroy_process_group()
    return 0


def main(argv: list[str] | None = None, model: str | None = None) -> int:
    """The command; ``model`` fixes the network (``brats train unet`` / ``brats train sspp``)."""
    args = build_parser(model).parse_args(sys.argv[1:] if argv is None else argv)
    prog = f"brats train {model}" if model else "train"
    try:
        return run(vars(args), context_from_env())
    except BratsError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

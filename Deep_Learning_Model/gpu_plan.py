"""How many epochs of the ``cv27`` recipe fit one lent-GPU call, from that GPU's measured speed.

    python -m Deep_Learning_Model.gpu_plan BENCH.json --minutes 7.5 --parallel 6 --from-cache C --out runs/cv

``BENCH.json`` is the last line of ``benchmarks/training_gpu.py --concurrent N``: the slices/s of N processes
training the U-Net, then the SSPP model, at once on the resident path. ``python -m Deep_Learning_Model.cv all
--parallel N`` runs the 12 trainings of a 5-fold CV with final models (6 per network) N at a time; an epoch of
each is one pass over its training slices, at most ``--steps`` steps of ``--batch`` (the folds' 18-19 cases
give 77-82 steps, the final run's 27 cases the cap of 100). With ``s_r`` steps per epoch in run ``r``, an
epoch of all 12 takes ``sum(s_r) * batch * (1/R_unet + 1/R_sspp)`` seconds when N = 6. The plan keeps
``--reserve`` minutes for the out-of-fold predictions that follow in the same call, one minute for the data and
15% of the rest for validation, snapshots and start-up; every fold and final run then trains the same number
of epochs, fixed before any of them starts. The runs' steps come from the slice
cache and the CV's splits (written into ``--out`` as ``cv all`` writes them, or read from ``--splits``).

Prints that number of epochs (at most ``--max-epochs``). Exits with 1, printing why, when too few fit to give
every run at least ``--min-slices`` training slices (default: the shipped models' 40 epochs x 51 steps x 32):
the CV would then rate a weaker recipe than the one it replaces, and none should be run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from brats_core.cache import open_cache
from brats_core.errors import BratsError
from brats_core.split import load_split
from Deep_Learning_Model.cv import write_splits
from Deep_Learning_Model.fusion import FUSED
from Deep_Learning_Model.training.config import make_config
from Deep_Learning_Model.training.loop import steps_per_epoch

#: Training slices of each shipped deep model (40 epochs x 51 steps x 32, ``checkpoints/logs/*/train_summary.json``).
SHIPPED_SLICES = 40 * 51 * 32


def run_steps(cache: Path, splits: Path, steps: int, batch: int) -> dict[str, int]:
    """Steps per epoch of each training of one network: ``fold_<k>`` and ``all`` (the final run) of ``splits``."""
    config = make_config("cv27", max_steps_per_epoch=steps, batch_size=batch)
    found = {}
    for path in sorted(splits.glob("fold_*.json")) + [splits / "all.json"]:
        train = load_split(path)["train"]
        slices = sum(len(entry.brain_slices) for entry in open_cache(cache, train))  # training's slices="brain"
        found[path.stem] = steps_per_epoch(config, slices, world_size=1)
    return found


def plan_epochs(bench: dict, minutes: float, parallel: int, steps: dict[str, int], batch: int,
                min_slices: int = SHIPPED_SLICES, reserve: float = 0.0) -> tuple[int, int, dict]:
    """Epochs that fit ``minutes`` less ``reserve`` (kept for what follows the trainings), the fewest that give
    every run ``min_slices``, and the figures behind them. ``steps``: steps per epoch of each training of one
    network (the other network trains the same runs)."""
    key = f"concurrent_{parallel}"
    rates = {}
    for model in FUSED:
        try:
            rates[model] = float(bench["slices_per_s"][model][key])
        except (KeyError, TypeError, ValueError) as exc:
            raise BratsError(f"benchmark has no {key} rate of {model}: run training_gpu.py --concurrent "
                             f"{parallel}") from exc
    seconds = 0.85 * (60.0 * (minutes - reserve) - 60.0)
    per_epoch = sum(steps.values()) * batch * sum(1.0 / rate for rate in rates.values())
    epochs = math.floor(seconds / per_epoch) if seconds > 0 else 0
    fewest = math.ceil(min_slices / (min(steps.values()) * batch))
    return epochs, fewest, {"rates": rates, "steps_per_epoch": steps, "training_seconds": round(seconds),
                            "seconds_per_epoch_of_all": round(per_epoch, 2)}


def main(argv: list[str] | None = None) -> int:
    cv27 = make_config("cv27")
    parser = argparse.ArgumentParser(prog="python -m Deep_Learning_Model.gpu_plan", description=__doc__.split("\n")[0])
    parser.add_argument("bench", type=Path, help="the JSON line of benchmarks/training_gpu.py --concurrent N")
    parser.add_argument("--minutes", type=float, required=True, help="time for the data, the trainings and what "
                        "follows them in the same call")
    parser.add_argument("--reserve", type=float, default=0.0, metavar="MINUTES",
                        help="of --minutes, kept for what follows the trainings (the out-of-fold predictions)")
    parser.add_argument("--parallel", type=int, default=6)
    parser.add_argument("--from-cache", type=Path, required=True, help="the slice cache the CV trains from")
    parser.add_argument("--out", type=Path, help="the CV's output folder (cv all --out): its splits are written "
                        "there as cv all writes them, unless --splits names others")
    parser.add_argument("--splits", type=Path, help="a folder of fold_<k>.json and all.json (cv all --splits)")
    parser.add_argument("--steps", type=int, default=cv27.max_steps_per_epoch, help="most steps an epoch (cv27's)")
    parser.add_argument("--batch", type=int, default=cv27.batch_size, help="batch size (cv27's)")
    parser.add_argument("--min-slices", type=int, default=SHIPPED_SLICES,
                        help=f"fewer training slices for a run: refuse (default {SHIPPED_SLICES}, the shipped models')")
    parser.add_argument("--max-epochs", type=int, default=cv27.epochs, help="cap (default: cv27's)")
    args = parser.parse_args(argv)
    if args.out is None and args.splits is None:
        parser.error("give --out (the CV's folder; its splits are written there) or --splits")
    try:
        bench = json.loads(args.bench.read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError) as exc:
        print(f"gpu_plan: error: {args.bench}: {exc}", file=sys.stderr)
        return 1
    try:
        steps = run_steps(args.from_cache, args.splits or write_splits(args.out), args.steps, args.batch)
    except (OSError, BratsError) as exc:
        print(f"gpu_plan: error: {exc}", file=sys.stderr)
        return 1
    try:
        epochs, fewest, figures = plan_epochs(bench, args.minutes, args.parallel, steps, args.batch, args.min_slices,
                                              args.reserve)
    except BratsError as exc:
        print(f"gpu_plan: error: {args.bench}: {exc}", file=sys.stderr)
        return 1
    print(f"gpu_plan: {json.dumps(figures)}: {epochs} epochs of at most {args.steps} x {args.batch} fit; "
          f"{fewest} give every run {args.min_slices} slices", file=sys.stderr)
    if min(epochs, args.max_epochs) < fewest:
        print(f"gpu_plan: only {min(epochs, args.max_epochs)} epochs fit, below the {fewest} that give every run --min-slices "
              f"{args.min_slices}: do not run the CV here", file=sys.stderr)
        return 1
    print(min(epochs, args.max_epochs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

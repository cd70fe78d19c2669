"""How many epochs of the ``cv27`` recipe fit one lent-GPU call, from that GPU's measured speed.

    python -m Deep_Learning_Model.gpu_plan BENCH.json --minutes 7.5 --parallel 6

``BENCH.json`` is the last line of ``benchmarks/training_gpu.py --concurrent N``: the slices/s of N processes
training the U-Net, then the SSPP model, at once on the resident path. ``python -m Deep_Learning_Model.cv all
--parallel N`` runs the 12 trainings of a 5-fold CV with final models (6 per network) N at a time, so with
``S`` slices per training the trainings take ``6 S (1/R_unet + 1/R_sspp)`` seconds when N = 6. The plan keeps
15% of ``--minutes`` for validation, snapshots and start-up, and one minute for the data; every fold and final
run then trains the same number of epochs, fixed before any of them starts.

Prints that number of epochs (at most ``--max-epochs``). Exits with 1, printing why, when fewer than
``--min-epochs`` fit: below the slices the shipped models trained on, the CV would rate a weaker recipe than
the one it replaces, and none should be run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from brats_core.errors import BratsError
from Deep_Learning_Model.fusion import FUSED
from Deep_Learning_Model.training.config import make_config

#: Trainings per network in ``cv all``: five folds and the final run.
TRAININGS_PER_MODEL = 6


def plan_epochs(bench: dict, minutes: float, parallel: int, steps: int, batch: int) -> tuple[int, dict]:
    """Epochs of ``steps`` x ``batch`` slices that fit ``minutes``; and the figures behind them."""
    key = f"concurrent_{parallel}"
    rates = {}
    for model in FUSED:
        try:
            rates[model] = float(bench["slices_per_s"][model][key])
        except (KeyError, TypeError, ValueError) as exc:
            raise BratsError(f"benchmark has no {key} rate of {model}: run training_gpu.py --concurrent "
                             f"{parallel}") from exc
    seconds = 0.85 * (60.0 * minutes - 60.0)
    per_epoch = TRAININGS_PER_MODEL * steps * batch * sum(1.0 / rate for rate in rates.values())
    epochs = math.floor(seconds / per_epoch) if seconds > 0 else 0
    return epochs, {"rates": rates, "training_seconds": round(seconds), "seconds_per_epoch_of_all": round(per_epoch, 2)}


def main(argv: list[str] | None = None) -> int:
    cv27 = make_config("cv27")
    parser = argparse.ArgumentParser(prog="python -m Deep_Learning_Model.gpu_plan", description=__doc__.split("\n")[0])
    parser.add_argument("bench", type=Path, help="the JSON line of benchmarks/training_gpu.py --concurrent N")
    parser.add_argument("--minutes", type=float, required=True, help="time for the trainings and the data")
    parser.add_argument("--parallel", type=int, default=6)
    parser.add_argument("--steps", type=int, default=cv27.max_steps_per_epoch, help="steps per epoch (cv27's)")
    parser.add_argument("--batch", type=int, default=cv27.batch_size, help="batch size (cv27's)")
    parser.add_argument("--min-epochs", type=int, default=20, help="fewer: refuse (default 20)")
    parser.add_argument("--max-epochs", type=int, default=cv27.epochs, help="cap (default: cv27's)")
    args = parser.parse_args(argv)
    try:
        bench = json.loads(args.bench.read_text().strip().splitlines()[-1])
        epochs, figures = plan_epochs(bench, args.minutes, args.parallel, args.steps, args.batch)
    except (OSError, ValueError, IndexError, BratsError) as exc:
        print(f"gpu_plan: error: {args.bench}: {exc}", file=sys.stderr)
        return 1
    print(f"gpu_plan: {json.dumps(figures)}: {epochs} epochs of {args.steps} x {args.batch} fit", file=sys.stderr)
    if epochs < args.min_epochs:
        print(f"gpu_plan: only {epochs} epochs fit, below --min-epochs {args.min_epochs}: do not run the CV here",
              file=sys.stderr)
        return 1
    print(min(epochs, args.max_epochs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

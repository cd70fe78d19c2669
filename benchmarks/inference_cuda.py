"""CUDA inference of the deep models: seconds per 240x240x155 case and slices per second (AMP, channels_last).

Loads one case (default: the bundled sample zip) once, then for each export times ``Predictor.predict``
(preprocess, batched AMP inference, restore to the original grid) over ``--repeats`` runs after a warm-up, and
the network alone on a batch of random slices. Without CUDA it says so in its JSON line and exits 0, so
``make bench`` runs anywhere. The last stdout line is one JSON object.

    python benchmarks/inference_cuda.py [--case CASE_DIR_OR_ZIP] [--checkpoints A.pt B.pt] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from brats_app.registry import default_checkpoint
from brats_core.cases import load_case, open_cases
from brats_core.device import autocast
from Deep_Learning_Model.predictor import Predictor
from sspp_unet_api.app.config import SAMPLE_ZIP


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: cuDNN autotuning, allocator
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def measure(path: Path, case, repeats: int, batch_size: int) -> dict:
    predictor = Predictor.from_export(path, device="cuda", batch_size=batch_size)
    seconds_per_case = _timed(lambda: predictor.predict(case), repeats)
    config = predictor.model_config
    batch = torch.randn(batch_size, config.channels, config.input_size, config.input_size, device="cuda")
    batch = batch.contiguous(memory_format=torch.channels_last)

    def forward() -> None:
        with torch.inference_mode(), autocast(predictor.device):
            predictor.model(batch)

    forward_seconds = _timed(forward, repeats * 4)
    return {
        "checkpoint": str(path),
        "arch": config.arch,
        "s_per_case": round(seconds_per_case, 3),
        "network_slices_per_s": round(batch_size / forward_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=SAMPLE_ZIP, help="case folder or zip (default: the sample)")
    parser.add_argument("--checkpoints", type=Path, nargs="+", default=None,
                        help="exports to time (default: the shipped sspp and unet)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="2 timed runs")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is not available here: nothing to measure")
        print(json.dumps({"benchmark": "inference_cuda", "cuda_available": False}))
        return
    repeats = 2 if args.quick else args.repeats
    checkpoints = args.checkpoints or [default_checkpoint("sspp"), default_checkpoint("unet")]
    with open_cases(args.case) as found:
        case = load_case(found[0])
    results = []
    for path in checkpoints:
        row = measure(path, case, repeats, args.batch_size)
        print(f"{row['arch']:5s} {row['s_per_case']:.3f} s/case, network {row['network_slices_per_s']:.0f} slices/s")
        results.append(row)
    print(json.dumps({
        "benchmark": "inference_cuda",
        "cuda_available": True,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "case": case.case_id,
        "batch_size": args.batch_size,
        "results": results,
    }))


if __name__ == "__main__":
    main()

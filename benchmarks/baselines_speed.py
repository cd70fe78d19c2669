"""Speed of the baselines: predict time per 240x240x155 case per model, and fit time of naive and all four ML
models on the split's training cases, pinned to ``--cores`` CPU cores (targets: 10 s a case, 10 min to fit).

    python benchmarks/baselines_speed.py               # shipped checkpoints, split test cases, with fit timing
    python benchmarks/baselines_speed.py --skip-fit    # predict times only

Uses ``../shared/data/brats_dev`` and ``splits/brats_dev.json``; without them, synthetic 240x240x155 cases
(predict times only: the fit needs the real training cases). The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys

from _common import pin_cores

from brats_app.registry import models_of


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--cases", type=int, default=3, help="number of test cases to time")
    parser.add_argument("--models", nargs="+", default=list(models_of("Naive_Model", "Machine_Learning_Model")))
    parser.add_argument("--skip-fit", action="store_true")
    args = parser.parse_args(argv)
    cores = pin_cores(args.cores)
    load_start = os.getloadavg()[0]

    import time

    import torch

    torch.set_num_threads(cores)
    from brats_core.cases import load_case
    from brats_core.config import DEFAULT_SPLIT, SHARED_DATA_DIR
    from brats_core.split import split_case_files

    real = SHARED_DATA_DIR.is_dir() and DEFAULT_SPLIT.is_file()
    if not real:
        return _run(args, cores, load_start, {}, [], [])
    with split_case_files(SHARED_DATA_DIR, DEFAULT_SPLIT) as subsets:
        cases, load_s = [], []
        for files in subsets["test"][: args.cases]:
            start = time.perf_counter()
            cases.append(load_case(files, with_seg=False))
            load_s.append(time.perf_counter() - start)
        return _run(args, cores, load_start, subsets, cases, load_s)


def _run(args, cores: int, load_start: float, subsets: dict, cases: list, load_s: list[float]) -> int:
    """Time predictions on ``cases`` (synthetic ones when empty) and, on the shared data, training."""
    import json
    import statistics
    import time

    from brats_app.registry import REGISTRY, load_segmenter
    from brats_core.cases import load_case
    from brats_core.synth import make_synthetic_case
    from Machine_Learning_Model.train import train
    from Naive_Model.naive_mean_model import NaiveMeanSegmenter

    real = bool(subsets)
    if not real:
        cases = [make_synthetic_case(f"synth_{i}", shape=(240, 240, 155), seed=i) for i in range(args.cases)]

    # Wall time depends on what else runs on the cores; CPU time (all threads of this process) does not:
    # on `cores` otherwise idle cores, wall time lies between cpu / cores and cpu.
    predict_s: dict[str, dict[str, float]] = {}
    for name in args.models:
        options = {"n_jobs": cores} if REGISTRY[name].family == "ml" else {}  # KNN query threads; naive has no option
        segmenter = load_segmenter(name, **options)
        times, cpu = [], []
        for case in cases:
            start, start_cpu = time.perf_counter(), time.process_time()
            segmenter.predict(case)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        predict_s[name] = {"mean": statistics.fmean(times), "max": max(times), "cpu_mean": statistics.fmean(cpu),
                           "cpu_max": max(cpu)}
        print(f"{name}: predict {predict_s[name]['mean']:.2f} s per case (max {predict_s[name]['max']:.2f} s, "
              f"CPU {predict_s[name]['cpu_mean']:.2f} s)", flush=True)

    fit_s: dict[str, float] = {}
    if real and not args.skip_fit:
        train_files, val_files = subsets["train"], subsets["val"]
        fit_s["naive"] = NaiveMeanSegmenter.fit(load_case(files) for files in train_files).fit_seconds
        start, start_cpu = time.perf_counter(), time.process_time()
        train(list(models_of("Machine_Learning_Model")), train_files, val_files, log=lambda message: None)
        fit_s["ml_all_four"] = time.perf_counter() - start
        fit_s["ml_all_four_cpu"] = time.process_time() - start_cpu
        print(f"fit: naive {fit_s['naive']:.1f} s, all four ML models {fit_s['ml_all_four']:.1f} s", flush=True)

    worst_predict = max(v["max"] for v in predict_s.values())
    worst_cpu = max(v["cpu_max"] for v in predict_s.values())
    result = {
        "benchmark": "baselines_speed",
        "cores": cores,
        "data": "brats_dev test cases" if real else "synthetic 240x240x155",
        "n_cases": len(cases),
        "loadavg_1min": [load_start, os.getloadavg()[0]],  # other processes on the machine, start and end
        "load_seconds_mean": statistics.fmean(load_s) if load_s else None,
        "predict_seconds": predict_s,
        "fit_seconds": fit_s,
        "targets": {"predict_max_seconds": 10.0, "fit_all_ml_max_seconds": 600.0},
        "predict_within_target": worst_predict <= 10.0,
        "predict_cpu_within_target": worst_cpu <= 10.0,
        "fit_within_target": fit_s["ml_all_four"] <= 600.0 if "ml_all_four" in fit_s else None,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

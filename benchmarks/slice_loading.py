"""2D slice throughput: the slice cache + ``SliceDataset`` against the original project's access pattern.

The original ``BRATSDataset3D`` re-loaded all five NIfTI volumes of a case with nibabel ``get_fdata()`` for
every slice it returned, then kept one axial slice. Here both read the same cases in one run: the original
pattern on a few random slices (it takes about a second per slice), the cache on many random-order slices
after a cold build into a fresh temporary cache (timed separately). Both run single-process with warm OS
file caches. Uses ``../shared/data/brats_dev`` when present, else synthetic 240 x 240 x 155 cases (the JSON
says which). The last stdout line is one JSON object.

Usage: ``.venv/bin/python benchmarks/slice_loading.py [--cache-slices 2000] [--original-slices 8]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from brats_core.cache import build_cache
from brats_core.cases import CaseFiles, find_cases
from brats_core.config import MODALITIES, SHARED_DATA_DIR, PreprocessConfig
from brats_core.dataset import SliceDataset
from brats_core.synth import write_dataset

SYNTHETIC_SHAPE = (240, 240, 155)


def original_slice(files: CaseFiles, z: int) -> tuple[np.ndarray, np.ndarray]:
    """The original access pattern: read all five volumes in full for one axial slice."""
    volumes = [nib.load(files.images[m]).get_fdata() for m in MODALITIES]
    seg = nib.load(files.seg).get_fdata()
    return np.stack([v[:, :, z] for v in volumes]).astype(np.float32), seg[:, :, z].astype(np.int64)


def time_original(cases: list[CaseFiles], count: int, rng: np.random.Generator) -> float:
    """Seconds to return ``count`` random slices the original way."""
    depth = nib.load(cases[0].images["t1"]).shape[2]
    picks = [(cases[int(rng.integers(len(cases)))], int(rng.integers(depth))) for _ in range(count)]
    start = time.perf_counter()
    for files, z in picks:
        original_slice(files, z)
    return time.perf_counter() - start


def time_cache(dataset: SliceDataset, count: int, rng: np.random.Generator) -> float:
    """Seconds to return ``count`` slices of ``dataset`` in random order."""
    order = rng.permutation(len(dataset)) if count <= len(dataset) else rng.integers(len(dataset), size=count)
    order = order[:count]
    dataset[int(order[0])]  # first access opens the maps
    start = time.perf_counter()
    for item in order:
        dataset[int(item)]
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=SHARED_DATA_DIR, help="cases (default: the shared dev set)"
    )
    parser.add_argument("--cases", type=int, default=None, help="use only the first N cases (default: all)")
    parser.add_argument(
        "--cache-slices", type=int, default=2000, help="slices read from the cache (default 2000)"
    )
    parser.add_argument(
        "--original-slices", type=int, default=8, help="slices read the original way (default 8)"
    )
    parser.add_argument(
        "--synthetic-cases", type=int, default=4, help="synthetic cases when --data is absent"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    with tempfile.TemporaryDirectory(prefix="bench_slices_") as tmp:
        if args.data.is_dir():
            cases, data = (
                find_cases(args.data),
                "brats_dev" if args.data == SHARED_DATA_DIR else str(args.data),
            )
        else:
            print(f"{args.data} not found: using {args.synthetic_cases} synthetic cases of {SYNTHETIC_SHAPE}")
            cases = write_dataset(
                Path(tmp) / "data", n=args.synthetic_cases, seed=args.seed, shape=SYNTHETIC_SHAPE
            )
            data = "synthetic"
        cases = cases[: args.cases] if args.cases else cases

        start = time.perf_counter()
        entries = build_cache(cases, PreprocessConfig(), cache_root=Path(tmp) / "cache", progress=False)
        build_s = time.perf_counter() - start
        dataset = SliceDataset(entries)
        cache_s = time_cache(dataset, args.cache_slices, rng)
        original_s = time_original(cases, args.original_slices, rng)

    cache_rate = args.cache_slices / cache_s
    original_rate = args.original_slices / original_s
    size = entries[0].geometry.size
    print(f"data: {data}, {len(cases)} cases, {len(dataset)} cached slices of 4 x {size} x {size}")
    print(f"cache build (cold, 1 process): {build_s:.1f} s ({build_s / len(cases):.2f} s per case)")
    print(
        f"cache + SliceDataset: {args.cache_slices} random slices in {cache_s:.2f} s = {cache_rate:,.0f} slices/s"
    )
    print(
        f"original (5 x nibabel get_fdata per slice): {args.original_slices} slices in {original_s:.1f} s "
        f"= {original_rate:.2f} slices/s ({original_s / args.original_slices:.2f} s per slice)"
    )
    print(f"speedup: {cache_rate / original_rate:,.0f}x")
    result = {
        "benchmark": "slice_loading",
        "cache_slices_per_s": round(cache_rate, 1),
        "original_slices_per_s": round(original_rate, 3),
        "speedup": round(cache_rate / original_rate, 1),
        "cases": len(cases),
        "data": data,
        "cache_build_s": round(build_s, 2),
        "cache_slices_timed": args.cache_slices,
        "original_slices_timed": args.original_slices,
        "slice_size": size,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

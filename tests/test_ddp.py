"""DistributedDataParallel: ``torchrun --nproc_per_node=2`` on CPU (gloo) trains one run, written by rank 0 only."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from brats_core.cache import build_cache, cache_path, open_cache
from brats_core.cases import find_cases
from brats_core.config import REPO_ROOT, PreprocessConfig
from brats_core.dataset import SliceDataset
from brats_core.split import save_split
from Deep_Learning_Model.training.sampler import SliceSampler
from Deep_Learning_Model.training.state import load_training_state

SIZE = 32
EPOCHS, STEPS, BATCH, WORLD = 2, 2, 2, 2


def test_torchrun_two_cpu_processes(synthetic_root: Path, tmp_path: Path):
    cases = find_cases(synthetic_root)[:3]
    ids = [c.case_id for c in cases]
    build_cache(cases, PreprocessConfig(size=SIZE), cache_root=tmp_path / "cache", progress=False)
    cache = cache_path(PreprocessConfig(size=SIZE), tmp_path / "cache")
    split = save_split(
        {"seed": 0, "train": ids[:2], "val": ids[2:], "test": [], "folds": [ids[:2], ids[2:]]},
        tmp_path / "split.json",
    )
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
        str(REPO_ROOT / "Deep_Learning_Model" / "train.py"),
        "--model", "unet", "--from-cache", str(cache), "--split", str(split), "--out", str(out),
        "--epochs", str(EPOCHS), "--max-steps-per-epoch", str(STEPS), "--batch-size", str(BATCH),
        "--base-width", "4", "--workers", "0", "--device", "cpu", "--seed", "5",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    # rank 0 alone wrote: one header, one line per epoch, no stray files of another rank
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["best.pt", "config.json", "export.pt", "last.pt", "log.csv", "train_summary.json"]
    )
    assert result.stderr.count("training unet") == 1
    with (out / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(int(r["samples"]) == WORLD * STEPS * BATCH for r in rows)  # both ranks' batches counted
    assert all(r["val_mean_dice"] for r in rows)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == WORLD
    assert summary["samples_per_rank_last_epoch"] == [STEPS * BATCH] * WORLD
    assert load_training_state(out / "last.pt")["global_step"] == EPOCHS * STEPS

    # the ranks drew disjoint positions of one shared draw: together, exactly the single-process epoch
    has_tumour = SliceDataset(open_cache(cache, ids[:2]), slices="brain").has_tumour
    for epoch in range(EPOCHS):
        shards = []
        for rank in range(WORLD):
            sampler = SliceSampler(has_tumour, STEPS * BATCH, 0.5, seed=5, rank=rank, world_size=WORLD)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        whole = SliceSampler(has_tumour, WORLD * STEPS * BATCH, 0.5, seed=5)
        whole.set_epoch(epoch)
        assert sorted(shards[0] + shards[1]) == sorted(whole)
        assert not np.array_equal(shards[0], shards[1])

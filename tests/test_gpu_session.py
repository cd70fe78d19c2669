"""The lent-GPU plan: epochs from the measured speed (gpu_plan), and the session script's calls run end to end on
CPU, with what comes back scored here as a GPU session's results would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from brats_core.cache import build_cache, cache_path
from brats_core.cases import find_cases
from brats_core.config import REPO_ROOT, PreprocessConfig
from brats_core.split import save_split
from brats_core.transport import pack
from Deep_Learning_Model.cv import main as cv
from Deep_Learning_Model.export import load_export
from Deep_Learning_Model.gpu_plan import main as gpu_plan
from Deep_Learning_Model.gpu_plan import plan_epochs


def _bench(tmp_path: Path, unet: float, sspp: float, parallel: int = 6) -> Path:
    path = tmp_path / "bench.txt"
    rates = {"unet": {f"concurrent_{parallel}": unet}, "sspp": {f"concurrent_{parallel}": sspp}}
    path.write_text("unet resident ...\n" + json.dumps({"slices_per_s": rates}) + "\n")
    return path


def test_the_plan_fits_the_trainings_into_the_minutes_at_the_measured_speed(tmp_path, capsys) -> None:
    bench = json.loads(_bench(tmp_path, 5000, 2500).read_text().splitlines()[-1])
    epochs, figures = plan_epochs(bench, 9.0, 6, 100, 32)
    # 6 trainings per network, 3,200 slices an epoch: 3.84 s (unet) + 7.68 s (sspp) per epoch of all of them
    assert figures["seconds_per_epoch_of_all"] == pytest.approx(11.52)
    assert epochs == int(0.85 * (9 * 60 - 60) / 11.52) == 35
    assert gpu_plan([str(_bench(tmp_path, 5000, 2500)), "--minutes", "9"]) == 0
    assert capsys.readouterr().out.strip() == "35"
    assert gpu_plan([str(_bench(tmp_path, 50000, 25000)), "--minutes", "9"]) == 0
    assert capsys.readouterr().out.strip() == "60"  # cv27's epochs at most


@pytest.mark.parametrize(("content", "message"), [
    (None, "below --min-epochs 20: do not run the CV here"),
    ('{"slices_per_s": {"unet": {"resident": 1}}}', "no concurrent_6 rate of unet"),
    ("not json", "Expecting value"),
])  # fmt: skip
def test_a_plan_that_cannot_be_made_says_why(tmp_path, capsys, content, message) -> None:
    path = _bench(tmp_path, 1000, 500) if content is None else tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    assert gpu_plan([str(path), "--minutes", "9"]) == 1
    err = capsys.readouterr().err
    assert message in err and (content is None or str(path) in err)


def test_the_session_script_runs_its_calls_and_what_comes_back_is_scored_here(synthetic_root, tmp_path) -> None:
    cases = find_cases(synthetic_root)
    build_cache(cases, PreprocessConfig(size=128), cache_root=tmp_path / "cache", progress=False)
    cache = cache_path(PreprocessConfig(size=128), tmp_path / "cache")
    a, b, c, d = (case.case_id for case in cases)
    splits, folds = tmp_path / "splits", [[a, b], [c, d]]
    save_split({"seed": 0, "train": [c], "val": [d], "test": [a, b], "folds": folds}, splits / "fold_1.json")
    save_split({"seed": 0, "train": [a], "val": [b], "test": [c, d], "folds": folds}, splits / "fold_2.json")
    save_split({"seed": 0, "train": [a, b, c, d], "val": [], "test": [], "folds": folds}, splits / "all.json")
    first, second = tmp_path / "carried1", tmp_path / "carried2"
    payload = pack(cache, tmp_path / "cache.tar.xz").read_bytes()
    for folder, part, data in ((first, "cache.part00", payload[:1000]), (second, "cache.part01", payload[1000:])):
        folder.mkdir()
        (folder / part).write_bytes(data)
    work, out = tmp_path / "work", tmp_path / "out"
    env = {**os.environ, "WORK": str(work), "PARALLEL": "2", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "BENCH_ARGS": "--device cpu --base-width 4 --batch-size 4 --cases 2 --slices 8 --warmup 1 --steps 1",
           "PLAN_ARGS": "--min-epochs 1 --max-epochs 2 --steps 2 --batch 4",
           "CV_OPTIONS": f"--splits {splits} --device cpu",
           "CV_ARGS": "--base-width 4 --batch-size 4 --max-steps-per-epoch 2 --val-every 1"}
    script = str(REPO_ROOT / "Deep_Learning_Model" / "gpu_session.sh")
    for n, (folder, args) in enumerate(((first, ["bench"]), (second, ["cv", "6"]))):
        result = subprocess.run(["bash", script, *args], cwd=REPO_ROOT, env={**env, "CARRIED": str(folder),
                                "OUT": str(out / str(n))}, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads((out / "0" / "bench.txt").read_text().splitlines()[-1])
    assert set(bench["slices_per_s"]["unet"]) == {"resident", "fixed_batch", "concurrent_2"}
    assert (work / "epochs").read_text().strip() == "2"
    assert "cv all: done: trainings, final models and out-of-fold predictions" in result.stdout

    here = tmp_path / "here"  # what came back, unpacked as README says
    with tarfile.open(out / "1" / "cv.tgz") as tar:
        tar.extractall(here, filter="data")
    assert not list(here.rglob("*.pt"))
    for model in ("unet", "sspp"):
        parts = sorted((out / "1").glob(f"{model}.pt.part*"))
        (here / "cv" / model / "final" / "export.pt").write_bytes(b"".join(p.read_bytes() for p in parts))
    assert cv(["all", "--from-cache", str(cache), "--out", str(here / "cv"), "--splits", str(splits)]) == 0
    for model in ("unet", "sspp", "fusion"):
        for folder in ("cv", "cv_tta"):  # scored here, from the maps made there
            assert json.loads((here / "cv" / model / folder / "summary.json").read_text())["n_cases"] == 4
    meta = load_export(here / "cv" / "sspp" / "final" / "export.pt")[3]
    assert meta["info"]["cv"]["cases"] == 4 and meta["info"]["train_config"]["epochs"] == 2


def test_benchmark_trains_a_2_5d_network_on_its_context_slices() -> None:
    """``--context 1`` feeds 12 channels: the benchmark's network is built for them (it once was not)."""
    command = [sys.executable, "benchmarks/training_gpu.py", "--device", "cpu", "--base-width", "4", "--batch-size", "4",
               "--cases", "2", "--slices", "8", "--warmup", "1", "--steps", "1", "--context", "1",
               "--paths", "resident", "--models", "unet"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.splitlines()[-1])
    assert line["context"] == 1 and line["slices_per_s"]["unet"]["resident"] > 0

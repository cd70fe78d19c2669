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

from brats_core.cache import build_cache, cache_path, open_cache
from brats_core.cases import find_cases
from brats_core.config import REPO_ROOT, PreprocessConfig
from brats_core.split import save_split
from brats_core.transport import pack
from Deep_Learning_Model import gpu_plan as plan_module
from Deep_Learning_Model.cv import main as cv
from Deep_Learning_Model.export import load_export
from Deep_Learning_Model.gpu_plan import SHIPPED_SLICES, plan_epochs, run_steps
from Deep_Learning_Model.gpu_plan import main as gpu_plan


def _bench(tmp_path: Path, unet: float, sspp: float, parallel: int = 6) -> Path:
    path = tmp_path / "bench.txt"
    rates = {"unet": {f"concurrent_{parallel}": unet}, "sspp": {f"concurrent_{parallel}": sspp}}
    path.write_text("unet resident ...\n" + json.dumps({"slices_per_s": rates}) + "\n")
    return path


#: Steps per epoch of the 27-case CV's runs at batch 32 (fold training sets of 2,485-2,633 slices, all 3,742).
CV27_STEPS = {"fold_1": 77, "fold_2": 78, "fold_3": 82, "fold_4": 82, "fold_5": 82, "all": 100}


def test_the_plan_fits_the_trainings_into_the_minutes_at_the_measured_speed(tmp_path) -> None:
    bench = json.loads(_bench(tmp_path, 5000, 2500).read_text().splitlines()[-1])
    epochs, fewest, figures = plan_epochs(bench, 9.0, 6, CV27_STEPS, 32)
    # 501 steps of 32 slices an epoch per network: 3.21 s (unet) + 6.41 s (sspp) per epoch of all 12 runs
    assert figures["seconds_per_epoch_of_all"] == pytest.approx(9.62)
    assert epochs == int(0.85 * (9 * 60 - 60) / (501 * 32 * (1 / 5000 + 1 / 2500))) == 42
    # the smallest fold (77 steps) needs 27 epochs to train on the shipped models' 40 x 51 x 32 = 65,280 slices
    assert fewest == 27 and 26 * 77 * 32 < SHIPPED_SLICES <= 27 * 77 * 32
    # README's call 2: 9.5 minutes less 1 spare and 0.3 of unpacking, 1.5 of them kept for the out-of-fold maps
    assert plan_epochs(bench, 8.2, 6, CV27_STEPS, 32, reserve=1.5)[0] == int(0.85 * (6.7 * 60 - 60) / 9.62) == 30


def test_a_cv_call_on_a_machine_without_the_bench_call_stops_at_once(tmp_path) -> None:
    """A fresh machine (the warm one went back between calls) holds nothing: the call says so in a second."""
    env = {**os.environ, "WORK": str(tmp_path / "work"), "OUT": str(tmp_path / "out"), "CARRIED": str(tmp_path)}
    result = subprocess.run(["bash", str(REPO_ROOT / "Deep_Learning_Model" / "gpu_session.sh"), "cv", "9"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3 and "did not run the bench call (a fresh machine?)" in result.stderr


@pytest.fixture(scope="module")
def small_cv(synthetic_root, tmp_path_factory) -> tuple[Path, Path]:
    """A slice cache of the 4 synthetic cases and the splits of a 2-fold CV over them."""
    root = tmp_path_factory.mktemp("plan")
    cases = find_cases(synthetic_root)
    build_cache(cases, PreprocessConfig(size=128), cache_root=root / "cache", progress=False)
    a, b, c, d = (case.case_id for case in cases)
    splits, folds = root / "splits", [[a, b], [c, d]]
    save_split({"seed": 0, "train": [c], "val": [d], "test": [a, b], "folds": folds}, splits / "fold_1.json")
    save_split({"seed": 0, "train": [a, b], "val": [], "test": [c, d], "folds": folds}, splits / "fold_2.json")
    save_split({"seed": 0, "train": [a, b, c, d], "val": [], "test": [], "folds": folds}, splits / "all.json")
    return cache_path(PreprocessConfig(size=128), root / "cache"), splits


def test_the_plan_reads_each_runs_steps_from_the_cache_and_splits(small_cv, tmp_path, capsys) -> None:
    cache, splits = small_cv
    brain = {entry.case_id: len(entry.brain_slices) for entry in open_cache(cache)}
    a, b, c, d = sorted(brain)
    steps = run_steps(cache, splits, 100, 4)
    assert steps == {"fold_1": brain[c] // 4, "fold_2": (brain[a] + brain[b]) // 4, "all": sum(brain.values()) // 4}
    assert run_steps(cache, splits, 5, 4) == dict.fromkeys(steps, 5)  # at most --steps
    fewest = -(-1000 // (4 * min(steps.values())))
    args = [str(_bench(tmp_path, 5000, 2500)), "--minutes", "9", "--from-cache", str(cache), "--splits", str(splits),
            "--batch", "4", "--min-slices", "1000"]
    assert gpu_plan(args) == 0
    assert capsys.readouterr().out.strip() == "60"  # cv27's epochs at most
    assert gpu_plan([*args, "--max-epochs", str(fewest - 1)]) == 1
    assert f"below the {fewest} that give every run --min-slices 1000" in capsys.readouterr().err


def test_the_plan_writes_the_cv_splits_where_cv_all_will_read_them(small_cv, tmp_path, monkeypatch) -> None:
    cache, splits = small_cv
    written: list[Path] = []

    def write_splits(out: Path) -> Path:
        written.append(out)
        return splits

    monkeypatch.setattr(plan_module, "write_splits", write_splits)
    assert gpu_plan([str(_bench(tmp_path, 5000, 2500)), "--minutes", "9", "--from-cache", str(cache),
                     "--out", str(tmp_path / "cv"), "--batch", "4", "--min-slices", "1"]) == 0
    assert written == [tmp_path / "cv"]


@pytest.mark.parametrize(("content", "message"), [
    (None, "below the 27 that give every run --min-slices 65280: do not run the CV here"),
    ('{"slices_per_s": {"unet": {"resident": 1}}}', "no concurrent_6 rate of unet"),
    ("not json", "Expecting value"),
])  # fmt: skip
def test_a_plan_that_cannot_be_made_says_why(tmp_path, capsys, monkeypatch, content, message) -> None:
    monkeypatch.setattr(plan_module, "run_steps", lambda *args: CV27_STEPS)  # the 27-case CV's runs
    path = _bench(tmp_path, 1000, 500) if content is None else tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    assert gpu_plan([str(path), "--minutes", "9", "--from-cache", str(tmp_path), "--splits", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert message in err and (content is None or str(path) in err)


def test_the_plan_names_a_missing_cache(small_cv, tmp_path, capsys) -> None:
    _, splits = small_cv
    missing = tmp_path / "no_cache"
    assert gpu_plan([str(_bench(tmp_path, 5000, 2500)), "--minutes", "9", "--from-cache", str(missing),
                     "--splits", str(splits)]) == 1
    assert str(missing) in capsys.readouterr().err


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
           "PLAN_ARGS": f"--min-slices 1 --max-epochs 2 --steps 2 --batch 4 --splits {splits}",
           "CV_OPTIONS": f"--splits {splits} --device cpu",
           "CV_ARGS": "--base-width 4 --batch-size 4 --max-steps-per-epoch 2 --val-every 1"}
    script = str(REPO_ROOT / "Deep_Learning_Model" / "gpu_session.sh")
    for n, (folder, args) in enumerate(((first, ["bench"]), (second, ["cv", "6"]))):
        result = subprocess.run(["bash", script, *args], cwd=REPO_ROOT, env={**env, "CARRIED": str(folder),
                                "OUT": str(out / str(n))}, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads((out / "0" / "bench.txt").read_text().splitlines()[-1])
    assert set(bench["slices_per_s"]["unet"]) == {"resident", "concurrent_2"}
    assert (work / "epochs").read_text().strip() == "2"
    assert "cv all: done: trainings, final models and out-of-fold predictions" in result.stdout

    here = tmp_path / "here"  # what came back, unpacked as README says
    with tarfile.open(out / "1" / "cv.tgz") as tar:
        tar.extractall(here, filter="data")
    assert not list(here.rglob("*.pt"))
    for model in ("unet", "sspp"):
        parts = sorted((out / "1").glob(f"{model}.pt.part*"))
        (here / "cv" / model / "final" / "export.pt").write_bytes(b"".join(p.read_bytes() for p in parts))
    for model in ("unet", "sspp", "fusion"):  # as README scores them here: never training or predicting
        for tta in ([], ["--tta"]):
            assert cv(["score", "--no-predict", "--model", model, "--from-cache", str(cache), "--out", str(here / "cv"),
                       "--splits", str(splits), *tta]) == 0
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

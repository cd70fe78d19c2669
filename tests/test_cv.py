"""The cache-only cross-validation driver (Deep_Learning_Model.cv): committed folds, resume, score, final."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from pathlib import Path

import pytest
import torch

from brats_core.cache import build_cache, cache_path
from brats_core.cases import find_cases
from brats_core.config import DEFAULT_SPLIT, PreprocessConfig
from brats_core.split import fold_splits, load_split, save_split
from Deep_Learning_Model.cv import fold_numbers, run_trainings, write_splits
from Deep_Learning_Model.cv import main as cv
from Deep_Learning_Model.export import load_export

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = ["--", "--base-width", "4", "--batch-size", "4", "--epochs", "2", "--max-steps-per-epoch", "2", "--device",
        "cpu", "--val-every", "1"]


def test_written_folds_are_those_of_compare_and_the_final_split_trains_every_case(tmp_path) -> None:
    folder = write_splits(tmp_path)
    assert folder == tmp_path / "splits" and fold_numbers(folder) == [1, 2, 3, 4, 5]
    split = load_split(DEFAULT_SPLIT)
    for k, fold in enumerate(fold_splits(split, 5, 0), start=1):
        written = load_split(folder / f"fold_{k}.json")
        assert {key: written[key] for key in ("train", "val", "test", "folds")} == {
            key: fold[key] for key in ("train", "val", "test", "folds")}
    final = load_split(folder / "all.json")
    cases = sorted(i for key in ("train", "val", "test") for i in split[key])
    assert sorted(final["train"]) == cases and final["val"] == final["test"] == []
    (folder / "fold_1.json").write_text((folder / "fold_2.json").read_text())  # a resumed run keeps its files
    assert write_splits(tmp_path) == folder and load_split(folder / "fold_1.json")["test"] == fold_splits(
        split, 5, 0)[1]["test"]


@pytest.fixture(scope="module")
def cv_setup(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cv")
    cases = find_cases(synthetic_root)
    build_cache(cases, PreprocessConfig(size=128), cache_root=root / "cache", progress=False)  # SSPP's size
    a, b, c, d = (case.case_id for case in cases)
    folds = [[a, b], [c, d]]
    save_split({"seed": 0, "train": [c], "val": [d], "test": [a, b], "folds": folds}, root / "splits/fold_1.json")
    save_split({"seed": 0, "train": [a], "val": [b], "test": [c, d], "folds": folds}, root / "splits/fold_2.json")
    save_split({"seed": 0, "train": [a, b, c, d], "val": [], "test": [], "folds": folds}, root / "splits/all.json")
    return cache_path(PreprocessConfig(size=128), root / "cache"), root / "splits"


def test_cv_trains_in_resumable_calls_scores_out_of_fold_and_trains_the_final_model(cv_setup, tmp_path, capsys):
    cache, splits = cv_setup
    common = ["--from-cache", str(cache), "--model", "unet", "--out", str(tmp_path), "--splits", str(splits)]
    assert cv(["train", *common, *TINY, "--stop-after", "1"]) == 0  # a call that ends inside fold 1
    assert "folds finished [] of [1, 2]" in capsys.readouterr().out
    assert (tmp_path / "unet/fold_1/last.pt").is_file() and not (tmp_path / "unet/fold_2").exists()
    assert cv(["train", *common, *TINY]) == 0  # resumes fold 1, then fold 2
    assert "folds finished [1, 2] of [1, 2]" in capsys.readouterr().out
    log = (tmp_path / "unet/fold_1/log.csv").read_text().splitlines()
    assert len(log) == 3  # header + epochs 1 and 2: the second call went on from epoch 1
    export = tmp_path / "unet/fold_2/export.pt"
    stamp = export.stat().st_mtime_ns
    assert cv(["train", *common, *TINY]) == 0 and export.stat().st_mtime_ns == stamp  # finished folds stay
    assert load_export(export)[1].head == "regions"  # the cv27 preset

    assert cv(["score", *common, "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed["cv_dice"]) == {"WT", "TC", "ET"}
    summary = json.loads((tmp_path / "unet/cv/summary.json").read_text())
    assert summary["n_cases"] == 4
    per_case = (tmp_path / "unet/cv/per_case.csv").read_text().splitlines()
    assert len(per_case) == 5 and per_case[0].startswith("case_id,WT_dice")
    tuning = json.loads((tmp_path / "unet/cv/postprocess.json").read_text())
    assert tuning["cases"] == 4 and tuning["mean_dice_best"] >= tuning["mean_dice_without"]
    assert set(tuning["nested"]["chosen"]) == {"1", "2"}  # each fold's setting from the other fold's cases
    assert tuning["nested"]["mean_dice"] <= tuning["mean_dice_best"]
    nested = (tmp_path / "unet/cv/postprocessed_nested/per_case.csv").read_text().splitlines()
    assert len(nested) == 5 and "nested" in (tmp_path / "unet/cv/postprocessed_nested/summary.md").read_text()

    assert cv(["final", *common, *TINY]) == 0
    assert "finished" in capsys.readouterr().out
    best = [json.loads((tmp_path / f"unet/fold_{k}/train_summary.json").read_text())["best_epoch"] for k in (1, 2)]
    chosen = math.ceil(statistics.median(best))
    snapshots = sorted(p.name for p in (tmp_path / "unet/final/snapshots").iterdir())
    assert snapshots == ["epoch_001.pt", "epoch_002.pt"]  # every epoch of the folds' recipe
    model, config, _, meta = load_export(tmp_path / "unet/final/export.pt")
    snapshot = load_export(tmp_path / f"unet/final/snapshots/epoch_{chosen:03d}.pt")[0]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), snapshot.state_dict().values(),
                                                strict=True))  # the epoch chosen from the CV ships
    info = meta["info"]
    assert info["best_epoch"] == info["epochs_trained"] == chosen and str(best) in info["epoch_choice"]
    assert info["train_config"]["epochs"] == 2  # the folds' schedule, cut at the chosen epoch
    assert sorted(info["train_cases"]) == sorted(load_split(splits / "all.json")["train"])
    assert info["cv"]["cases"] == 4 and set(info["cv"]["scores"]) == {"WT", "TC", "ET"}
    assert meta["postprocess"] == tuning["chosen"]
    from Deep_Learning_Model.predictor import Predictor

    provenance = Predictor.from_export(tmp_path / "unet/final/export.pt", "cpu").provenance
    served = json.loads((tmp_path / "unet/cv/postprocessed/summary.json").read_text())  # as the export serves
    raw = json.loads((tmp_path / "unet/cv/summary.json").read_text())
    assert provenance.cv_scores["cv_WT_dice_mean"] == pytest.approx(served["WT"]["dice"]["mean"])
    assert info["cv"]["scores_without_postprocess"]["WT"]["dice"]["mean"] == pytest.approx(raw["WT"]["dice"]["mean"])
    assert provenance.cv_scores["cv_n_cases"] == 4


def test_cv_all_trains_in_parallel_predicts_then_scores_elsewhere_and_then_does_nothing(cv_setup, tmp_path, capsys):
    cache, splits = cv_setup
    device = tmp_path / "device"
    common = ["--from-cache", str(cache), "--splits", str(splits), "--jobs", "2"]
    assert cv(["all", *common, "--out", str(device), "--parallel", "3", "--no-score", *TINY]) == 0
    assert "out-of-fold predictions (not scored" in capsys.readouterr().out
    for model in ("unet", "sspp"):
        assert "epoch 2/2" in (device / model / "fold_1" / "train.log").read_text()  # each worker logs its own
        assert load_export(device / model / "final" / "export.pt")[3]["info"]["best_epoch"] in (1, 2)
    for model in ("unet", "sspp", "fusion"):
        for folder in ("oof", "oof_tta"):
            assert len(list((device / model / folder).glob("*.npz"))) == 4
        assert not (device / model / "cv").exists()
    # what comes back from the device (cv.tgz: no weights; the final exports apart) is scored here
    here = tmp_path / "here"
    shutil.copytree(device, here, ignore=shutil.ignore_patterns("*.pt"))
    for model in ("unet", "sspp"):
        shutil.copy(device / model / "final" / "export.pt", here / model / "final" / "export.pt")
    assert cv(["all", *common, "--out", str(here), *TINY]) == 0
    assert "done: folds, scores (with and without test-time flips) and final models" in capsys.readouterr().out
    for model in ("unet", "sspp", "fusion"):
        for folder in ("cv", "cv_tta"):
            assert json.loads((here / model / folder / "summary.json").read_text())["n_cases"] == 4
    for model in ("unet", "sspp"):
        meta = load_export(here / model / "final" / "export.pt")[3]
        assert meta["info"]["cv"]["cases"] == 4
    stamp = (here / "sspp/final/export.pt").stat().st_mtime_ns
    assert cv(["all", *common, "--out", str(here), *TINY]) == 0
    assert (here / "sspp/final/export.pt").stat().st_mtime_ns == stamp


def test_a_fold_predicted_once_trained_needs_no_weights_later(cv_setup, tmp_path, capsys):
    """``predict --folds 1`` keeps fold 1's out-of-fold label maps as soon as it is trained; with its weights
    gone (a session that keeps only those small files) fold 2 trains and ``score`` predicts only fold 2."""
    cache, splits = cv_setup
    common = ["--from-cache", str(cache), "--model", "unet", "--out", str(tmp_path), "--splits", str(splits)]
    assert cv(["train", *common, "--folds", "1", *TINY]) == 0
    assert cv(["predict", *common, "--folds", "1", "--device", "cpu"]) == 0
    fold_1 = sorted(load_split(splits / "fold_1.json")["test"])
    assert sorted(p.stem for p in (tmp_path / "unet/oof").glob("*.npz")) == fold_1
    assert "2 out-of-fold predictions" in capsys.readouterr().out
    assert cv(["predict", *common, "--folds", "2", "--device", "cpu"]) == 1
    assert "fold 2 is not trained yet" in capsys.readouterr().err
    assert cv(["predict", *common, "--folds", "3"]) == 1
    assert f"{splits}: no fold 3 (folds 1, 2)" in capsys.readouterr().err
    assert cv(["predict", *common[:2], "--model", "fusion", *common[4:], "--folds", "3"]) == 1
    assert "no fold 3" in capsys.readouterr().err and not (tmp_path / "fusion").exists()  # nothing written
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "unet/oof").glob("*.npz")}
    for weights in (tmp_path / "unet/fold_1").glob("*.pt"):
        weights.unlink()
    assert cv(["train", *common, *TINY]) == 0  # fold 1 counts as trained by its summary
    assert "folds finished [1, 2] of [1, 2]" in capsys.readouterr().out
    assert cv(["score", *common, "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "unet/cv/summary.json").read_text())["n_cases"] == 4
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "unet/oof").glob("*.npz") if p.name in stamps} == \
        stamps  # fold 1's predictions were scored as they were


def test_cv_errors_name_the_problem(cv_setup, tmp_path, capsys):
    cache, splits = cv_setup
    assert cv(["score", "--from-cache", str(cache), "--model", "sspp", "--out", str(tmp_path), "--splits",
               str(splits)]) == 1
    assert "fold 1 is not trained yet" in capsys.readouterr().err
    assert cv(["final", "--from-cache", str(cache), "--model", "unet", "--out", str(tmp_path), "--splits",
               str(splits)]) == 1
    assert "has no training summary" in capsys.readouterr().err
    assert cv(["train", "--from-cache", str(cache), "--model", "fusion", "--out", str(tmp_path)]) == 1
    assert "fusion is scored" in capsys.readouterr().err
    assert cv(["score", "--from-cache", str(cache), "--model", "unet", "--out", str(tmp_path), "--splits",
               str(splits), "--no-predict"]) == 1
    assert "no out-of-fold prediction of" in capsys.readouterr().err


def test_training_stops_at_the_deadline_after_a_validated_epoch(cv_setup, tmp_path, capsys):
    cache, splits = cv_setup
    args = ["--model", "unet", "--from-cache", str(cache), "--split", str(splits / "fold_1.json"), "--out",
            str(tmp_path), *TINY[1:], "--epochs", "5", "--workers", "0", "--time-limit", "0.001"]
    from Deep_Learning_Model.train import main as train_main

    start = time.monotonic()
    assert train_main(args) == 0
    assert time.monotonic() - start < 120
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert len(log) == 2 and log[1].split(",")[-1] != ""  # one epoch, validated
    assert "stopped after epoch 1 of 5" in capsys.readouterr().err


def test_a_failing_parallel_run_is_logged_and_does_not_stop_the_others(cv_setup, tmp_path):
    cache, splits = cv_setup
    options = {"model": "unet", "from_cache": str(cache), "preset": "cv27", "base_width": 4, "batch_size": 4,
               "epochs": 1, "max_steps_per_epoch": 2, "device": "cpu"}
    good = (tmp_path / "good", {**options, "split": str(splits / "fold_1.json")}, "export.pt")
    bad = (tmp_path / "bad", {**options, "split": str(tmp_path / "missing.json")}, "export.pt")
    assert run_trainings([good, bad], 5.0, parallel=2) == [True, False]
    assert "missing.json" in (tmp_path / "bad" / "train.log").read_text()
    assert (tmp_path / "good" / "export.pt").is_file()


def test_fusion_of_named_members_such_as_two_seeds_and_the_guards_around_it(cv_setup, tmp_path, capsys):
    """``score --model fusion --members A B``: two trainings of one network fused into ``<out>/fusion``; the
    members are recorded and another fusion in the same place is refused; an export that has seen a test case
    of its fold, or members with another model, are refused with the file and the cases named."""
    cache, splits = cv_setup
    for seed in ("0", "1"):
        common = ["--from-cache", str(cache), "--model", "unet", "--out", str(tmp_path / f"seed{seed}"),
                  "--splits", str(splits)]
        assert cv(["train", *common, *TINY, "--seed", seed]) == 0
    members = [str(tmp_path / "seed0/unet"), str(tmp_path / "seed1/unet")]
    score = ["score", "--from-cache", str(cache), "--model", "fusion", "--splits", str(splits), "--device", "cpu"]
    assert cv([*score, "--out", str(tmp_path / "seeds"), "--members", *members]) == 0
    assert json.loads((tmp_path / "seeds/fusion/members.json").read_text()) == members
    assert json.loads((tmp_path / "seeds/fusion/cv/summary.json").read_text())["n_cases"] == 4
    assert not (tmp_path / "seeds/unet").exists() and not (tmp_path / "seeds/sspp").exists()
    capsys.readouterr()
    assert cv([*score, "--out", str(tmp_path / "seeds"), "--members", *members[::-1]]) == 1
    assert "holds the fusion of " + ", ".join(members) in capsys.readouterr().err
    assert cv([*score, "--out", str(tmp_path / "seeds")]) == 1  # the default pair would land beside them
    assert f"not of {tmp_path / 'seeds/unet'} and {tmp_path / 'seeds/sspp'}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cv(["score", "--from-cache", str(cache), "--model", "unet", "--out", str(tmp_path), "--members", *members])
    assert "--members goes with score --model fusion" in capsys.readouterr().err
    assert cv([*score, "--out", str(tmp_path / "one"), "--members", members[0]]) == 1
    assert "at least two member folders" in capsys.readouterr().err

    # fold 1's export of seed 1 swapped for its fold 2's: trained on fold 1's test cases
    shutil.copy(tmp_path / "seed1/unet/fold_2/export.pt", tmp_path / "seed1/unet/fold_1/export.pt")
    assert cv([*score, "--out", str(tmp_path / "leak"), "--members", *members]) == 1
    err = capsys.readouterr().err
    test_1 = load_split(splits / "fold_1.json")["test"]
    assert f"fold 1: {tmp_path / 'seed0/unet/fold_1/export.pt'}, {tmp_path / 'seed1/unet/fold_1/export.pt'} " \
           f"trained or validated on {', '.join(sorted(test_1))}, a test case of this fold" in err
    assert not list((tmp_path / "leak/fusion/oof").glob("*.npz"))

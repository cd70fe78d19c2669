"""``brats compare`` on synthetic cases with tiny models: outputs, failures in rows, shipped checkpoints, folds."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import brats_app.compare.runner as compare_module
from brats_app.cli import main as brats
from brats_app.compare.cli import main
from brats_app.compare.report import LEGACY_LABEL, SEED_NUMBERS
from brats_app.registry import REGISTRY
from brats_core.cases import find_cases
from brats_core.errors import BratsError
from brats_core.figures import (
    LABEL_COLOURS,
    intensity_window,
    labels_rgb,
    largest_tumour_slice,
    overlay,
    to_grey,
)
from brats_core.split import fold_splits, load_split, make_split, patient_id, save_split
from brats_core.synth import write_dataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--quick", "--device", "cpu", "--cache-dir",
            str(out / "cache"), *extra]


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _csv(out: Path) -> list[dict]:
    return _read_csv(out / "compare.csv")


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture(scope="module")
def all_models(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, dict]:
    """All seven models in quick mode on the 4 synthetic cases, counting how often compare loads each case."""
    out = tmp_path_factory.mktemp("compare_all")
    loads: dict[str, int] = {}
    original = compare_module.load_case

    def counting_load_case(files, *args, **kwargs):
        loads[files.case_id] = loads.get(files.case_id, 0) + 1
        return original(files, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compare_module, "load_case", counting_load_case)
        code = main(_args(synthetic_root, out))
    return out, code, loads


def test_all_models_write_every_file_and_row(all_models) -> None:
    out, code, loads = all_models
    assert code == 0
    for name in ("compare.md", "compare.csv"):
        assert (out / name).is_file()
    assert _is_png(out / "compare_dice.png") and _is_png(out / "compare_case.png")
    rows = _csv(out)
    assert [row["model"] for row in rows] == list(REGISTRY)
    split = load_split(out / "compare" / "split.json")  # no shared split for synthetic ids: a fresh one
    for row in rows:
        assert row["fold"] == "test" and row["status"] == "ok" and row["error"] == ""
        assert int(row["n_cases"]) == len(split["test"])
        assert float(row["train_seconds"]) > 0 and row["train_time"].endswith(" s")
        assert float(row["predict_seconds_per_case"]) > 0
        for region in ("WT", "TC", "ET"):
            assert 0.0 <= float(row[f"{region}_dice_mean"]) <= 1.0
            assert float(row[f"{region}_hd95_mean"]) >= 0.0
        # the table is the shared harness's summary of that model
        summary = json.loads((out / "compare" / row["model"] / "summary.json").read_text())
        assert float(row["WT_dice_mean"]) == pytest.approx(summary["WT"]["dice"]["mean"], abs=1e-6)
        assert float(row["legacy_slice_score_not_comparable_mean"]) == pytest.approx(summary["legacy"]["mean"], abs=1e-6)
        per_case = _read_csv(out / "compare" / row["model"] / "per_case.csv")
        assert [r["case_id"] for r in per_case] == split["test"]
    # each test case was loaded once for all seven models
    assert all(loads[case_id] == 1 for case_id in split["test"])
    # the trained checkpoints are kept beside the reports
    assert (out / "compare" / "naive" / "naive.npz").is_file()
    assert (out / "compare" / "knn" / "knn.joblib").is_file()
    assert (out / "compare" / "sspp" / "run" / "export.pt").is_file()
    # the fusion fuses the U-Net and U-Net + SSPP trained in this run: their training time is its
    seconds = {row["model"]: float(row["train_seconds"]) for row in rows}
    assert seconds["fusion"] == pytest.approx(seconds["unet"] + seconds["sspp"], abs=0.2)

    markdown = (out / "compare.md").read_text()
    assert LEGACY_LABEL in markdown and "Command: `brats compare --data" in markdown
    assert "Machine:" in markdown and "split.json" in markdown and "CPUs" in markdown
    for spec in REGISTRY.values():
        assert f"| {spec.display} | " in markdown
    for number in SEED_NUMBERS.values():
        assert f"| {number:.2f} |" in markdown
    assert "three different datasets" in markdown and "![compare_case.png](compare_case.png)" in markdown


def test_failing_models_are_reported_in_their_rows(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    from Machine_Learning_Model.models import VoxelSegmenter
    from Naive_Model.naive_mean_model import NaiveMeanSegmenter

    def broken_fit(cases):
        raise BratsError("atlas exploded")

    original_predict = VoxelSegmenter.predict

    def tree_breaks(self, case):
        if self.name == "tree":
            raise RuntimeError("tree broke")
        return original_predict(self, case)

    monkeypatch.setattr(NaiveMeanSegmenter, "fit", staticmethod(broken_fit))
    monkeypatch.setattr(VoxelSegmenter, "predict", tree_breaks)
    assert main(_args(synthetic_root, tmp_path, "--models", "naive,ridge,tree")) == 1

    rows = {row["model"]: row for row in _csv(tmp_path)}
    assert list(rows) == ["naive", "ridge", "tree"]
    assert rows["naive"]["status"] == "failed" and rows["naive"]["error"] == "training: BratsError: atlas exploded"
    assert rows["tree"]["status"] == "failed"
    assert rows["tree"]["error"].startswith("prediction of case 'synth_") and "RuntimeError: tree broke" in rows["tree"]["error"]
    assert rows["ridge"]["status"] == "ok" and float(rows["ridge"]["WT_dice_mean"]) > 0.3
    assert (tmp_path / "compare" / "ridge" / "per_case.csv").is_file()
    assert not (tmp_path / "compare" / "tree" / "per_case.csv").exists()
    assert "atlas exploded" in (tmp_path / "compare" / "naive" / "error.txt").read_text()
    markdown = (tmp_path / "compare.md").read_text()
    assert "| Naive (mean atlas) | **failed**: training: BratsError: atlas exploded |" in markdown
    assert _is_png(tmp_path / "compare_dice.png") and _is_png(tmp_path / "compare_case.png")


def test_a_fusion_without_its_members_fails_in_its_row(synthetic_root: Path, tmp_path: Path) -> None:
    assert main(_args(synthetic_root, tmp_path, "--models", "naive,fusion")) == 1
    rows = {row["model"]: row for row in _csv(tmp_path)}
    assert rows["naive"]["status"] == "ok" and rows["fusion"]["status"] == "failed"
    assert rows["fusion"]["error"] == ("training: BratsError: fusion fuses unet and sspp as trained in this run, and "
                                       "unet and sspp were not trained (add them to --models, or see their rows)")


def test_use_shipped_loads_checkpoints_and_reports_recorded_time(all_models, synthetic_root: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    trained, _, _ = all_models
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(trained / "compare" / "ridge" / "ridge.joblib", shipped / "ridge.joblib")
    shipped_as = {"naive": trained / "compare" / "naive" / "naive.npz", "ridge": shipped / "ridge.joblib",
                  "unet": tmp_path / "no_checkpoints" / "unet.pt"}
    for name, path in shipped_as.items():
        monkeypatch.setitem(REGISTRY, name, replace(REGISTRY[name], default_checkpoint=path))
    split = trained / "compare" / "split.json"
    out = tmp_path / "out"
    assert main(_args(synthetic_root, out, "--use-shipped", "--split", str(split),
                      "--models", "naive,ridge,unet")) == 1
    rows = {row["model"]: row for row in _csv(out)}
    assert rows["naive"]["status"] == rows["ridge"]["status"] == "ok"
    assert rows["ridge"]["train_time"].startswith("shipped: ") and rows["ridge"]["train_time"].endswith("(recorded)")
    assert rows["naive"]["train_time"] == "n/a" or rows["naive"]["train_time"].startswith("shipped: ")
    before = json.loads((trained / "compare" / "ridge" / "summary.json").read_text())
    assert float(rows["ridge"]["WT_dice_mean"]) == pytest.approx(before["WT"]["dice"]["mean"], abs=1e-6)
    assert rows["unet"]["status"] == "failed" and "no shipped unet checkpoint" in rows["unet"]["error"]
    assert "shipped checkpoints (--use-shipped)" in (out / "compare.md").read_text()

    # a split whose test case was a training case of the checkpoints: refused, not scored
    original = load_split(split)
    leaky = {**original, "train": original["test"], "test": original["train"]}
    leaky_path = save_split(leaky, tmp_path / "leaky.json")
    assert main(_args(synthetic_root, tmp_path / "leak", "--use-shipped", "--split", str(leaky_path),
                      "--models", "ridge")) == 1
    (row,) = _csv(tmp_path / "leak")
    assert row["status"] == "failed" and "trained or tuned on test case(s)" in row["error"]


@pytest.fixture(scope="module")
def six_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("six_cases")
    write_dataset(root, n=6, seed=1, shape=(48, 48, 32))
    return root


@pytest.fixture(scope="module")
def two_folds(six_cases: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``brats compare --folds 2 --models naive,ridge --quick`` on the six cases; returns its --out folder."""
    out = tmp_path_factory.mktemp("two_folds")
    assert main(_args(six_cases, out, "--folds", "2", "--models", "naive,ridge")) == 0
    return out


def test_folds_train_per_fold_and_pool_every_case(six_cases: Path, two_folds: Path) -> None:
    tmp_path = two_folds
    rows = _csv(tmp_path)
    assert [(row["fold"], row["model"]) for row in rows] == [
        ("1", "naive"), ("1", "ridge"), ("2", "naive"), ("2", "ridge"), ("all", "naive"), ("all", "ridge")
    ]
    assert all(row["status"] == "ok" for row in rows)
    assert [int(row["n_cases"]) for row in rows] == [3, 3, 3, 3, 6, 6]
    assert all(row["train_time"].endswith("(2 folds)") for row in rows if row["fold"] == "all")
    tested = []
    for fold in (1, 2):
        split = load_split(tmp_path / "compare" / f"fold_{fold}" / "split.json")
        assert not set(split["test"]) & set(split["train"] + split["val"]) and len(split["val"]) == 1
        tested += split["test"]
        assert (tmp_path / "compare" / f"fold_{fold}" / "ridge" / "per_case.csv").is_file()
    assert sorted(tested) == sorted(case.case_id for case in find_cases(six_cases))
    pooled = _read_csv(tmp_path / "compare" / "ridge" / "per_case.csv")
    assert sorted(row["case_id"] for row in pooled) == sorted(tested)
    markdown = (tmp_path / "compare.md").read_text()
    assert "## Mean Dice WT / TC / ET per fold" in markdown and "2-fold cross-validation" in markdown
    assert _is_png(tmp_path / "compare_dice.png") and _is_png(tmp_path / "compare_case.png")
    # the CV report carries one row per case with every model's out-of-fold Dice
    per_case = markdown.split("## Dice WT / TC / ET per case", 1)[1].split("##", 1)[0]
    ridge = {row["case_id"]: row for row in pooled}
    for case_id, row in ridge.items():
        line = next(line for line in per_case.splitlines() if line.startswith(f"| {case_id} |"))
        assert " / ".join(f"{float(row[f'{r}_dice']):.3f}" for r in ("WT", "TC", "ET")) in line


def test_final_checkpoints_take_the_cv_settings_and_scores(six_cases: Path, two_folds: Path, tmp_path: Path) -> None:
    """``brats train naive|ml --all-cases --cv OUT``: fit on every case, tuned values = medians over the folds."""
    import json
    import statistics

    from brats_app.cli import main as brats
    from Machine_Learning_Model.models import VoxelSegmenter
    from Naive_Model.naive_mean_model import NaiveMeanSegmenter

    cases = sorted(case.case_id for case in find_cases(six_cases))
    assert brats(["train", "naive", "--all-cases", "--cv", str(two_folds), "--data", str(six_cases),
                  "--checkpoint", str(tmp_path / "naive.npz"), "--png", str(tmp_path / "naive.png")]) == 0
    assert brats(["train", "ml", "--model", "ridge", "--all-cases", "--cv", str(two_folds), "--data", str(six_cases),
                  "--checkpoints", str(tmp_path), "--size", "32", "--samples-per-case", "400",
                  "--knn-max-samples", "600"]) == 0
    folds = [VoxelSegmenter.load(two_folds / "compare" / f"fold_{k}" / "ridge" / "ridge.joblib") for k in (1, 2)]
    final = VoxelSegmenter.load(tmp_path / "ridge.joblib")
    assert final.thresholds["ridge"] == pytest.approx(statistics.median(f.thresholds["ridge"] for f in folds))
    assert final.min_component_fraction == statistics.median(f.min_component_fraction for f in folds)
    for name, segmenter in (("naive", NaiveMeanSegmenter.load(tmp_path / "naive.npz")), ("ridge", final)):
        provenance = segmenter.provenance
        assert sorted(provenance.train_cases) == cases and not provenance.val_cases
        summary = json.loads((two_folds / "compare" / name / "summary.json").read_text())
        assert provenance.cv_scores["cv_WT_dice_mean"] == pytest.approx(summary["WT"]["dice"]["mean"])
        assert provenance.cv_scores["cv_n_cases"] == len(cases)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--all-cases"], "--all-cases and --cv go together"), (["--cv", "x"], "--all-cases and --cv go together")],
)
def test_final_training_needs_a_cv(synthetic_root: Path, capsys, extra: list[str], message: str) -> None:
    from brats_app.cli import main as brats

    for family in ("naive", "ml"):
        with pytest.raises(SystemExit):
            brats(["train", family, "--data", str(synthetic_root), *extra])
        assert message in capsys.readouterr().err


def test_final_training_refuses_folders_that_do_not_make_one_cv(six_cases: Path, two_folds: Path, tmp_path: Path,
                                                                capsys) -> None:
    """A leftover fold of another run, or a test-split run's report in the CV's place, is not recorded as a CV."""
    from brats_app.cli import main as brats

    def final(cv: Path) -> int:
        return brats(["train", "naive", "--all-cases", "--cv", str(cv), "--data", str(six_cases),
                      "--checkpoint", str(tmp_path / "naive.npz"), "--png", str(tmp_path / "naive.png")])

    mixed = tmp_path / "mixed"
    shutil.copytree(two_folds, mixed)
    shutil.copytree(mixed / "compare" / "fold_1", mixed / "compare" / "fold_3")  # an earlier 3-fold run's
    assert final(mixed) == 1
    assert "the test cases of fold_1, fold_2, fold_3 overlap: folders of two compare runs are mixed" in \
        capsys.readouterr().err
    shutil.rmtree(mixed / "compare" / "fold_3")
    report = mixed / "compare" / "naive" / "per_case.csv"
    lines = report.read_text().splitlines()
    report.write_text("\n".join(lines[:2]) + "\n")  # a later run on one test case wrote its report here
    assert final(mixed) == 1
    assert "holds 1 case(s), not the 6 test cases of the 2 folds" in capsys.readouterr().err
    assert not (tmp_path / "naive.npz").exists()


def test_a_cv_run_removes_the_extra_folds_of_an_earlier_one(six_cases: Path, tmp_path: Path) -> None:
    stale = tmp_path / "compare" / "fold_3"
    stale.mkdir(parents=True)
    (stale / "split.json").write_text("{}")
    assert main(_args(six_cases, tmp_path, "--folds", "2", "--models", "naive")) == 0
    assert sorted(p.name for p in (tmp_path / "compare").glob("fold_*")) == ["fold_1", "fold_2"]


def test_final_training_names_a_missing_cv(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    from brats_app.cli import main as brats

    assert brats(["train", "ml", "--all-cases", "--cv", str(tmp_path), "--data", str(synthetic_root),
                  "--checkpoints", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "compare") in err and "brats compare --folds 5" in err
    assert not list(tmp_path.glob("*.joblib"))


def test_fold_splits_are_patient_level_partitions() -> None:
    ids = [f"case_{i:02d}" for i in range(20)]
    split = make_split(ids, seed=3, n_val=3, n_test=5, folds=5)
    for k in (5, 4):  # the split's own 5 folds, then a fresh 4-fold partition
        folds = fold_splits(split, k, seed=3)
        assert len(folds) == k
        assert sorted(i for fold in folds for i in fold["test"]) == ids
        for fold in folds:
            assert sorted(fold["train"] + fold["val"] + fold["test"]) == ids and len(fold["val"]) == 3
        if k == 5:
            assert [fold["test"] for fold in folds] == split["folds"]


def test_fold_splits_keep_the_timepoints_of_a_patient_together(tmp_path: Path) -> None:
    ids = [f"BraTS-GLI-{p:05d}-{t:03d}" for p in range(10) for t in range(1 + p % 2)]  # 15 cases, 10 patients
    split = make_split(ids, n_val=2, n_test=2, folds=5)
    for k in (5, 3):
        for fold in fold_splits(split, k, seed=1):
            subset_of = {patient_id(i): key for key in ("train", "val", "test") for i in fold[key]}
            assert all(subset_of[patient_id(i)] == key for key in ("train", "val", "test") for i in fold[key])
            assert len({patient_id(i) for i in fold["val"]}) == 2
            assert load_split(save_split(fold, tmp_path / "fold.json")) == fold  # valid by patient


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--models", "naive,resnet"], "unknown ['resnet']"),
        (["--models", ","], "--models is empty"),
        (["--folds", "3", "--use-shipped"], "cannot use the shipped checkpoints"),
        (["--folds", "1"], "--folds must be at least 2"),
        (["--preset", "fastest"], "invalid choice: 'fastest'"),
    ],
    ids=["unknown-model", "no-model", "folds-and-shipped", "one-fold", "unknown-preset"],
)
def test_bad_options_are_rejected(synthetic_root: Path, tmp_path: Path, capsys, extra, message) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(_args(synthetic_root, tmp_path, *extra))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_bad_inputs_name_the_file(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    missing_split = tmp_path / "nowhere.json"
    assert brats(["compare", *_args(synthetic_root, tmp_path, "--split", str(missing_split))]) == 1
    assert f"{missing_split}: split file not found" in capsys.readouterr().err

    ids = [case.case_id for case in find_cases(synthetic_root)]
    foreign = save_split(make_split([*ids, "not_here"], seed=0), tmp_path / "foreign.json")
    assert brats(["compare", *_args(synthetic_root, tmp_path, "--split", str(foreign))]) == 1
    assert "not_here" in capsys.readouterr().err

    no_test = save_split({"seed": 0, "train": ids[:3], "val": ids[3:], "test": [], "folds": [ids[:2], ids[2:]]},
                         tmp_path / "no_test.json")
    assert brats(["compare", *_args(synthetic_root, tmp_path, "--split", str(no_test), "--models", "naive")]) == 1
    assert "no test case" in capsys.readouterr().err

    assert brats(["compare", *_args(tmp_path / "no_data", tmp_path)]) == 1
    assert "no_data" in capsys.readouterr().err

    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(synthetic_root, unlabelled)
    (unlabelled / ids[3] / f"{ids[3]}_seg.nii.gz").unlink()
    split = save_split({"seed": 0, "train": ids[:2], "val": ids[2:3], "test": ids[3:], "folds": [ids[:2], ids[2:]]},
                       tmp_path / "split.json")
    assert brats(["compare", *_args(unlabelled, tmp_path, "--split", str(split), "--models", "naive")]) == 1
    assert f"without a segmentation file cannot be scored: {unlabelled / ids[3]}" in capsys.readouterr().err


def test_overlay_colours_tumour_and_keeps_background() -> None:
    grey = to_grey(np.array([[0.0, 50.0], [100.0, 200.0]]), (0.0, 100.0))
    assert grey.tolist() == [[0, 128], [255, 255]]
    labels = np.array([[0, 1], [2, 4]], dtype=np.uint8)
    rgb = labels_rgb(labels)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == list(LABEL_COLOURS[4])
    mixed = overlay(grey, labels, alpha=1.0)
    assert mixed[0, 0].tolist() == [0, 0, 0]
    assert [mixed[0, 1].tolist(), mixed[1, 0].tolist()] == [list(LABEL_COLOURS[1]), list(LABEL_COLOURS[2])]
    assert overlay(grey, np.zeros_like(labels))[..., 0].tolist() == grey.tolist()


def test_grey_window_and_the_slice_to_show() -> None:
    assert intensity_window(np.zeros((4, 4))) == (0.0, 1.0)
    assert intensity_window(np.full((4, 4), 7.0)) == (7.0, 8.0)  # a flat image still gets a usable window
    labels = np.zeros((6, 5, 9), dtype=np.uint8)
    assert largest_tumour_slice(labels) == 4  # no tumour: the middle slice
    labels[1:3, 1:3, 6] = 4
    labels[1, 1, 2] = 1
    assert largest_tumour_slice(labels) == 6 and largest_tumour_slice(labels, axis=0) == 1
    labels[:, :, 3:8] = 2
    assert largest_tumour_slice(labels) == 5  # ties: the middle of the slab


def test_compare_refuses_a_split_whose_cases_hold_one_scan_twice(synthetic_root: Path, tmp_path: Path) -> None:
    from brats_app.compare.folds import resolve_split

    data = tmp_path / "mixed"
    shutil.copytree(synthetic_root, data)
    copy = data / "synth_000_again"
    shutil.copytree(data / "synth_000", copy)
    for path in copy.iterdir():
        path.rename(copy / path.name.replace("synth_000", "synth_000_again"))
    files = {f.case_id: f for f in find_cases(data)}
    with pytest.raises(BratsError, match=r"the cases of split .*split\.json \(made for this run, seed 0\): 1 pair\(s\) "
                                         r"of cases hold the same scan.*synth_000 and synth_000_again"):
        resolve_split(None, files, tmp_path / "out", seed=0)
    files.pop("synth_000_again")
    assert resolve_split(None, files, tmp_path / "out2", seed=0)[1]["folds"]

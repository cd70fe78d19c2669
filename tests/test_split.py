"""Patient-level splits: sizes, disjointness, determinism, validation of saved files, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from brats_app.cli import main as brats
from brats_core.cases import Case, find_cases, load_case
from brats_core.config import DEFAULT_SPLIT, SHARED_DATA_DIR
from brats_core.errors import BratsError
from brats_core.same_scan import same_scans
from brats_core.split import SUBSETS, load_split, make_split, patient_id, save_split, split_case_files
from brats_core.synth import make_synthetic_case, write_case

IDS = [f"case_{i:03d}" for i in range(20)]


def _without_date(split: dict) -> dict:
    return {key: value for key, value in split.items() if key != "created"}


def _assert_partition(split: dict, ids: list[str]) -> None:
    subsets = [set(split[key]) for key in SUBSETS]
    assert sum(len(s) for s in subsets) == len(ids)
    assert set().union(*subsets) == set(ids)
    fold_ids = [i for fold in split["folds"] for i in fold]
    assert sorted(fold_ids) == sorted(ids)
    for key in SUBSETS:
        assert split[key] == sorted(split[key])


def test_default_sizes_disjoint_and_sorted() -> None:
    split = make_split(IDS)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (12, 3, 5)
    _assert_partition(split, IDS)
    assert len(split["folds"]) == 5 and all(len(fold) == 4 for fold in split["folds"])
    assert split["seed"] == 0 and split["created"] and "Patient-level" in split["note"]


def test_deterministic_for_a_seed_and_independent_of_input_order() -> None:
    first = make_split(IDS, seed=7)
    again = make_split(list(reversed(IDS)), seed=7)
    assert _without_date(first) == _without_date(again)
    assert make_split(IDS, seed=8)["test"] != first["test"]


@pytest.mark.parametrize(("n", "sizes"), [(3, (1, 1, 1)), (4, (2, 1, 1)), (5, (3, 1, 1)), (10, (5, 2, 3))])
def test_few_cases_scale_held_out_sets_down(n: int, sizes: tuple[int, int, int]) -> None:
    ids = IDS[:n]
    split = make_split(ids)
    assert tuple(len(split[key]) for key in SUBSETS) == sizes
    _assert_partition(split, ids)
    assert "Scaled down" in split["note"]
    assert len(split["folds"]) == min(5, n)


def test_invalid_requests_raise() -> None:
    with pytest.raises(BratsError, match="too few"):
        make_split(IDS[:2])
    with pytest.raises(BratsError, match="duplicate"):
        make_split([*IDS[:5], IDS[0]])
    with pytest.raises(BratsError, match="folds"):
        make_split(IDS, folds=1)
    with pytest.raises(BratsError, match="negative"):
        make_split(IDS, n_val=-1)


def test_timepoints_of_one_patient_stay_in_one_subset_and_fold(tmp_path: Path) -> None:
    assert patient_id("BraTS-GLI-00017-001") == "BraTS-GLI-00017"
    assert patient_id("Brats18_2013_11_1") == "Brats18_2013_11_1"
    ids = [f"BraTS-GLI-{p:05d}-{t:03d}" for p in range(12) for t in range(1 + p % 3)]  # 24 cases, 12 patients
    split = make_split(ids, n_val=2, n_test=3, folds=4)
    _assert_partition(split, ids)
    subset_of = {patient_id(i): key for key in SUBSETS for i in split[key]}
    assert all(subset_of[patient_id(i)] == key for key in SUBSETS for i in split[key])
    assert [len({patient_id(i) for i in split[key]}) for key in ("val", "test")] == [2, 3]
    fold_of = {patient_id(i): f for f, fold in enumerate(split["folds"]) for i in fold}
    assert all(fold_of[patient_id(i)] == f for f, fold in enumerate(split["folds"]) for i in fold)
    assert "12 patients" in split["note"]

    a0, a1, b, c = "BraTS-GLI-00001-000", "BraTS-GLI-00001-001", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000"
    leaky = {"seed": 0, "train": [a0, b], "val": [c], "test": [a1], "folds": [[a0, a1], [b, c]]}
    with pytest.raises(BratsError, match="share patients") as info:
        load_split(_write(tmp_path / "leaky.json", leaky))
    assert "leaky.json" in str(info.value)
    torn = {"seed": 0, "train": [a0, a1], "val": [b], "test": [c], "folds": [[a0, b], [a1, c]]}
    with pytest.raises(BratsError, match="different folds"):
        load_split(_write(tmp_path / "torn.json", torn))


def test_split_case_files_finds_the_cases_once(synthetic_root: Path, tmp_path: Path) -> None:
    ids = sorted(p.name for p in synthetic_root.iterdir() if p.is_dir())
    path = save_split(make_split(ids, n_val=1, n_test=1, folds=2), tmp_path / "split.json")
    with split_case_files(synthetic_root, path) as subsets:
        split = load_split(path)
        assert {key: [f.case_id for f in files] for key, files in subsets.items()} == {k: split[k] for k in SUBSETS}
    with pytest.raises(BratsError, match="not among the available"), split_case_files(synthetic_root / ids[0], path):
        pass
    archive = shutil.make_archive(str(tmp_path / "cases"), "zip", synthetic_root)
    with split_case_files(archive, path) as subsets:  # a zip stays extracted inside the block
        assert [f.case_id for f in subsets["test"]] == split["test"]
        assert all(f.images["t1"].is_file() for f in subsets["train"])


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    split = make_split(IDS, seed=3)
    path = save_split(split, tmp_path / "sub" / "split.json")
    assert load_split(path) == split
    assert load_split(path, available_case_ids=IDS) == split


def _write(path: Path, content: object) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(val=[*s["val"], s["train"][0]]), "share case ids"),
        (lambda s: s.pop("test"), "lacks key"),
        (lambda s: s.update(folds=s["folds"][1:]), "partition"),
        (lambda s: s.update(train="case_000"), "list of case id strings"),
        (lambda s: s.update(seed="zero"), "seed"),
    ],
)
def test_load_rejects_bad_splits_naming_the_file(tmp_path: Path, mutate, message: str) -> None:
    split = make_split(IDS)
    mutate(split)
    path = _write(tmp_path / "bad.json", split)
    with pytest.raises(BratsError, match=message) as info:
        load_split(path)
    assert str(path) in str(info.value)


def test_load_rejects_missing_file_bad_json_and_unknown_ids(tmp_path: Path) -> None:
    with pytest.raises(BratsError, match="not found"):
        load_split(tmp_path / "absent.json")
    with pytest.raises(BratsError, match="JSON") as info:
        load_split(_write(tmp_path / "broken.json", "{not json"))
    assert "broken.json" in str(info.value)
    path = save_split(make_split(IDS), tmp_path / "split.json")
    with pytest.raises(BratsError, match="not among the available"):
        load_split(path, available_case_ids=IDS[1:])


def test_committed_split_is_valid_and_reproducible() -> None:
    split = load_split(DEFAULT_SPLIT)
    ids = sorted(i for key in SUBSETS for i in split[key])
    assert (len(split["val"]), len(split["test"])) == (3, 5)
    assert len(split["train"]) == len(ids) - 8
    # The 5-fold patient-level partition is what results are reported on: every case is tested once.
    assert len(split["folds"]) == 5
    assert sorted(i for fold in split["folds"] for i in fold) == ids
    assert max(map(len, split["folds"])) - min(map(len, split["folds"])) <= 1
    assert _without_date(make_split(ids, seed=split["seed"])) == _without_date(split)
    if SHARED_DATA_DIR.is_dir():  # the committed ids are exactly the shared cases
        shared = sorted(p.name for p in SHARED_DATA_DIR.iterdir() if p.is_dir())
        assert ids == shared


def test_cli_writes_split_of_a_folder(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "split.json"
    assert (
        brats(["split", str(synthetic_root), "--out", str(out), "--val", "1", "--test", "1", "--folds", "2"])
        == 0
    )
    split = load_split(out)
    case_ids = sorted(p.name for p in synthetic_root.iterdir() if p.is_dir())
    _assert_partition(split, case_ids)
    assert (len(split["val"]), len(split["test"]), len(split["folds"])) == (1, 1, 2)
    assert str(out) in capsys.readouterr().err
    assert brats(["split", str(synthetic_root), "--val", "1", "--test", "1", "--folds", "2"]) == 0
    assert _without_date(json.loads(capsys.readouterr().out)) == _without_date(split)


def test_one_scan_under_two_names_is_refused(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    """Mixing releases holds one patient twice (BraTS 2021 re-ships the 2020 cases under new ids): refused."""
    data = tmp_path / "mixed"
    shutil.copytree(synthetic_root, data)
    case = load_case(data / "synth_001")
    renamed = Case("BraTS2021_00999", case.images.astype(np.float32) * 2.0, case.seg, case.affine, case.spacing,
                   case.files)  # another release: new id, float32 instead of int16, rescaled intensities
    write_case(renamed, data)
    assert brats(["split", str(data), "--val", "1", "--test", "1", "--folds", "2"]) == 1
    err = capsys.readouterr().err
    assert "1 pair(s) of cases hold the same scan" in err and "BraTS2021_00999 and synth_001" in err
    assert "(T1ce similarity 1.000)" in err
    assert same_scans(find_cases(synthetic_root)) == []  # distinct synthetic patients stay apart


def test_timepoints_of_one_brats2023_patient_are_not_called_one_scan(tmp_path: Path) -> None:
    """BraTS 2023+ timepoints of a patient are one patient already (kept together by patient_id): not compared."""
    case = make_synthetic_case("BraTS-GLI-00007-000", shape=(48, 48, 32), seed=4)
    later = Case("BraTS-GLI-00007-001", case.images, case.seg, case.affine, case.spacing, case.files)
    other = Case("BraTS-GLI-00008-000", case.images, case.seg, case.affine, case.spacing, case.files)
    for item in (case, later, other):
        write_case(item, tmp_path, naming="brats2023")
    pairs = same_scans(find_cases(tmp_path))
    assert [(a, b) for a, b, _ in pairs] == [("BraTS-GLI-00007-000", "BraTS-GLI-00008-000"),
                                             ("BraTS-GLI-00007-001", "BraTS-GLI-00008-000")]


@pytest.mark.real_data
def test_the_shared_cases_are_different_scans(real_or_synthetic_root: Path) -> None:
    """No false alarm: the 27 shared patients (or, without them, the synthetic ones) stay far apart."""
    cases = find_cases(real_or_synthetic_root)
    real = real_or_synthetic_root == SHARED_DATA_DIR
    assert len(cases) == (27 if real else 4)
    assert same_scans(cases, threshold=0.28 if real else 0.75) == []  # closest pairs: 0.272 real, 0.72 synthetic

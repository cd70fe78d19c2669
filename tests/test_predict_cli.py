"""``brats predict`` and ``brats evaluate`` end to end, with a tiny test-only model registered by name."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_app import registry
from brats_app.cli import main as brats
from brats_app.predict import main as predict_main
from brats_core.cases import Case, find_cases, load_case
from brats_core.config import HD95_ONE_EMPTY, MODALITIES
from brats_core.errors import BratsError
from brats_core.nifti import save_labels
from brats_core.synth import make_synthetic_case, write_case

SHAPE = (48, 48, 32)
MODEL = "flair-threshold"


class FlairThreshold:
    """Test-only model: bright FLAIR voxels are edema; with ``tta`` the core of them is necrosis."""

    name = MODEL

    def __init__(self, tta: bool) -> None:
        self.tta = tta

    def predict(self, case: Case) -> np.ndarray:
        flair = case.images[MODALITIES.index("flair")]
        labels = np.where(flair > 0.75 * flair.max(), 2, 0).astype(np.uint8)
        if self.tta:
            labels[flair > 0.95 * flair.max()] = 1
        return labels


def load_flair_threshold(
    name: str, checkpoint: Path, device: str | None = None, tta: bool = False
):
    return FlairThreshold(tta)


def load_without_options(name: str, checkpoint: Path, device: str | None = None):
    return FlairThreshold(False)


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # a test-only model is one registry entry; its "checkpoint" is this test file
    for name, loader in ((MODEL, "load_flair_threshold"), ("no-options", "load_without_options")):
        spec = registry.ModelSpec(name, name, "test", f"{__name__}:{loader}", f"{__name__}:main", Path(__file__),
                                  True, f"{__name__}:fit")
        monkeypatch.setitem(registry.REGISTRY, name, spec)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.fixture
def cases_dir(synthetic_root: Path) -> Path:
    """Four synthetic cases synth_000 .. synth_003 (read-only)."""
    return synthetic_root


def _check_outputs(out_dir: Path, case_dirs: list[Path]) -> None:
    for case_dir in case_dirs:
        case = load_case(case_dir)
        image = nib.load(out_dir / f"{case.case_id}.nii.gz")
        labels = np.asarray(image.dataobj)
        assert image.shape == case.shape
        assert image.get_data_dtype() == np.uint8
        np.testing.assert_allclose(image.affine, case.affine)
        assert set(np.unique(labels)) <= {0, 2} and (labels == 2).any()
        np.testing.assert_array_equal(labels, FlairThreshold(False).predict(case))


def test_predict_folder_of_cases(cases_dir: Path, tmp_path: Path, capsys) -> None:
    assert brats(["predict", "--model", MODEL, "--out", str(tmp_path), str(cases_dir)]) == 0
    case_dirs = sorted(p for p in cases_dir.iterdir() if p.is_dir())
    _check_outputs(tmp_path, case_dirs)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{p.name}.nii.gz" for p in case_dirs]
    assert "wrote 4 of 4 case(s)" in capsys.readouterr().out


def test_predict_zip_and_case_without_seg(cases_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "cases.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in (cases_dir / "synth_000").iterdir():
            handle.write(path, f"synth_000/{path.name}")
    no_seg = make_synthetic_case("unlabelled", shape=SHAPE, seed=5, spacing=(1.0, 1.2, 2.0))
    no_seg.seg = None
    write_case(no_seg, tmp_path / "new")
    out = tmp_path / "out"
    assert brats(["predict", "--model", MODEL, "--out", str(out), str(archive), str(tmp_path / "new")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["synth_000.nii.gz", "unlabelled.nii.gz"]
    _check_outputs(out, [cases_dir / "synth_000", tmp_path / "new" / "unlabelled"])


def test_predict_errors(cases_dir: Path, tmp_path: Path, capsys) -> None:
    assert brats(["predict", "--model", "nope", "--out", str(tmp_path), str(cases_dir)]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert brats(["predict", "--model", "no-options", "--tta", "--out", str(tmp_path), str(cases_dir)]) == 1
    assert "does not support option(s) tta" in capsys.readouterr().err
    assert brats(["predict", "--model", MODEL, "--out", str(tmp_path), str(cases_dir), str(cases_dir)]) == 1
    assert "already found" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cuda_without_a_gpu_is_a_one_line_error(cases_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import torch

    from brats_core.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert brats(["predict", "--model", "unet", "--device", "cuda", "--out", str(tmp_path), str(cases_dir)]) == 1
    err = capsys.readouterr().err
    assert "device 'cuda' asked for, but torch finds no CUDA GPU on this machine" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())
    with pytest.raises(BratsError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(BratsError, match=r"device 'cuda:1' asked for, but this machine has 1 CUDA GPU"):
        resolve_device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_for_a_model_that_runs_on_the_cpu_says_so(cases_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["predict", "--model", MODEL, "--device", "cuda", "--out", str(tmp_path), str(cases_dir / "synth_000")]
    assert brats(argv) == 0
    assert f"model '{MODEL}' runs on the CPU; --device cuda does not apply to it" in capsys.readouterr().err


def test_tta_reaches_the_loader(cases_dir: Path, tmp_path: Path) -> None:
    assert registry.load_segmenter(MODEL, tta=True).tta is True
    assert (
        brats(["predict", "--model", MODEL, "--tta", "--out", str(tmp_path), str(cases_dir / "synth_001")])
        == 0
    )
    assert 1 in np.asarray(nib.load(tmp_path / "synth_001.nii.gz").dataobj)


@pytest.mark.parametrize(
    ("rank", "expected"), [("0", ["synth_000", "synth_003"]), ("1", ["synth_001"]), ("2", ["synth_002"])]
)
def test_torchrun_env_shards_cases(
    cases_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: str, expected: list[str]
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", rank)
    assert (
        brats(["predict", "--model", MODEL, "--device", "cpu", "--out", str(tmp_path), str(cases_dir)]) == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{c}.nii.gz" for c in expected]


def test_invalid_torchrun_env_raises(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cases_dir: Path
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(BratsError, match="invalid RANK"):
        predict_main(["--model", MODEL, "--out", str(tmp_path), str(cases_dir)])


def _write_predictions(cases_dir: Path, pred_dir: Path, make) -> None:
    for files in find_cases(cases_dir):
        case = load_case(files)
        save_labels(make(case.seg), case.affine, pred_dir / f"{case.case_id}.nii.gz")


def _evaluate(pred: Path, ref: Path, out: Path) -> dict:
    assert brats(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out)]) == 0
    assert (out / "per_case.csv").read_text().count("\n") == 5  # header + 4 cases
    assert "| WT |" in (out / "summary.md").read_text()
    return json.loads((out / "summary.json").read_text())


def test_evaluate_perfect_and_empty_predictions(cases_dir: Path, tmp_path: Path) -> None:
    _write_predictions(cases_dir, tmp_path / "perfect", lambda seg: seg)
    perfect = _evaluate(tmp_path / "perfect", cases_dir, tmp_path / "perfect_report")
    _write_predictions(cases_dir, tmp_path / "empty", np.zeros_like)
    empty = _evaluate(tmp_path / "empty", cases_dir, tmp_path / "empty_report")
    assert perfect["n_cases"] == empty["n_cases"] == 4
    for region in ("WT", "TC", "ET"):
        assert perfect[region]["dice"] == {"mean": 1.0, "sd": 0.0, "median": 1.0}
        assert perfect[region]["hd95"]["mean"] == 0.0
        assert empty[region]["dice"]["mean"] == 0.0 and empty[region]["sensitivity"]["mean"] == 0.0
        assert empty[region]["hd95"] == pytest.approx(
            {"mean": HD95_ONE_EMPTY, "sd": 0.0, "median": HD95_ONE_EMPTY}
        )
    assert perfect["legacy"]["mean"] == 1.0 and empty["legacy"]["mean"] > 0.5
    assert "| ET | 0.000 ± 0.000 | 373.13 ± 0.00 |" in (tmp_path / "empty_report" / "summary.md").read_text()


def test_predict_then_evaluate(cases_dir: Path, tmp_path: Path) -> None:
    assert brats(["predict", "--model", MODEL, "--out", str(tmp_path / "pred"), str(cases_dir)]) == 0
    summary = _evaluate(tmp_path / "pred", cases_dir, tmp_path / "report")
    assert 0.0 < summary["WT"]["dice"]["mean"] < 1.0
    assert summary["ET"]["dice"]["mean"] == 0.0  # the model never predicts label 4


def test_evaluate_errors_name_the_file(cases_dir: Path, tmp_path: Path, capsys) -> None:
    pred = tmp_path / "pred"
    _write_predictions(cases_dir, pred, lambda seg: seg)
    missing = pred / "synth_001.nii.gz"
    missing.unlink()
    assert (
        brats(["evaluate", "--pred", str(pred), "--ref", str(cases_dir), "--out", str(tmp_path / "r")]) == 1
    )
    err = capsys.readouterr().err
    assert str(missing) in err and "missing prediction" in err

    shutil.copy(pred / "synth_000.nii.gz", missing)
    wrong = pred / "synth_002.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), wrong)
    assert (
        brats(["evaluate", "--pred", str(pred), "--ref", str(cases_dir), "--out", str(tmp_path / "r")]) == 1
    )
    err = capsys.readouterr().err
    assert str(wrong) in err and "shape (10, 10, 10)" in err
    assert "evaluate:" in err.split("brats evaluate: error:")[0]  # the progress bar it interrupted...
    assert err.split("brats evaluate: error:")[0].endswith("\n")  # ...ends before the message starts

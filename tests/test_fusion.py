"""Fusion of the U-Net's and U-Net + SSPP's probabilities (``brats predict --model fusion``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brats_app.cli import main as brats
from brats_core.config import PreprocessConfig
from brats_core.errors import BratsError, CheckpointError
from brats_core.preprocessing import preprocess
from brats_core.synth import make_synthetic_case, write_dataset
from Deep_Learning_Model.export import write_random_export
from Deep_Learning_Model.fusion import FusionSegmenter, load_segmenter
from Deep_Learning_Model.heads import region_probabilities, restore_labels
from Deep_Learning_Model.model import ModelConfig
from Deep_Learning_Model.predictor import Predictor, slice_probabilities

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(arch: str, **overrides) -> ModelConfig:
    tiny = {"base_width": 4, "input_size": 64, "sspp_windows": (1, 2, 4), "sspp_dim": 8, "sspp_heads": 2}
    return ModelConfig(arch=arch, **{**tiny, **overrides})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fusion")
    write_random_export(root / "unet.pt", _config("unet"), seed=1)
    write_random_export(root / "sspp.pt", _config("sspp", head="regions"), seed=2)
    return root


def _probs(predictor: Predictor, images: np.ndarray) -> torch.Tensor:
    head = predictor.model_config.head
    return slice_probabilities(predictor.model, images, "cpu", amp=False, head=head)


def test_fusion_averages_probabilities_in_the_right_space(folder: Path, tmp_path: Path) -> None:
    case = make_synthetic_case("synth", shape=(40, 40, 24), seed=2)
    pre = preprocess(case, PreprocessConfig(size=64))
    unet, sspp = (Predictor.from_export(folder / f"{m}.pt", device="cpu", amp=False) for m in ("unet", "sspp"))
    mixed = FusionSegmenter([unet, sspp], weights=[1, 3])  # a regions head among them: fused as regions
    assert mixed.head == "regions"
    expected = 0.25 * region_probabilities(_probs(unet, pre.images), "softmax") + 0.75 * _probs(sspp, pre.images)
    torch.testing.assert_close(mixed.probabilities(pre), expected)
    labels = mixed.predict(case)
    np.testing.assert_array_equal(labels, restore_labels(expected, pre.geometry, "regions"))
    other = Predictor.from_export(write_random_export(tmp_path / "u2.pt", _config("unet"), seed=5), "cpu", amp=False)
    softmax = FusionSegmenter([unet, other])  # all softmax: class probabilities averaged, argmax
    assert softmax.head == "softmax"
    expected = 0.5 * (_probs(unet, pre.images) + _probs(other, pre.images))
    torch.testing.assert_close(softmax.probabilities(pre), expected)


def test_fusion_refuses_what_it_cannot_fuse(folder: Path, tmp_path: Path) -> None:
    unet = Predictor.from_export(folder / "unet.pt", device="cpu")
    with pytest.raises(BratsError, match="at least two"):
        FusionSegmenter([unet])
    with pytest.raises(BratsError, match="weights"):
        FusionSegmenter([unet, unet], weights=[1])
    resized = Predictor.from_export(write_random_export(tmp_path / "u.pt", _config("unet", input_size=32)), "cpu")
    with pytest.raises(BratsError, match="share their preprocessing"):
        FusionSegmenter([unet, resized])
    binary = Predictor.from_export(write_random_export(tmp_path / "b.pt", _config("unet", num_classes=2)), "cpu")
    with pytest.raises(BratsError, match="whole-tumour"):
        FusionSegmenter([unet, binary])
    with pytest.raises(CheckpointError, match="missing export"):
        load_segmenter("fusion", tmp_path, device="cpu")
    with pytest.raises(CheckpointError, match=r"u\.pt: not a readable fusion manifest .*takes its JSON manifest"):
        load_segmenter("fusion", tmp_path / "u.pt", device="cpu")
    with pytest.raises(CheckpointError, match=r"nothing\.json: the fusion model takes its manifest"):
        load_segmenter("fusion", tmp_path / "nothing.json", device="cpu")


def test_brats_predict_fuses_a_folder_of_the_two_and_records_what_the_models_saw(folder: Path, tmp_path: Path,
                                                                                  capsys) -> None:
    write_dataset(tmp_path / "cases", n=1, seed=3, shape=(40, 40, 24))
    out = tmp_path / "preds"
    assert brats(["predict", "--model", "fusion", "--checkpoint", str(folder), "--device", "cpu", "--tta",
                  "--out", str(out), str(tmp_path / "cases")]) == 0
    (written,) = out.glob("*.nii.gz")
    assert written.stat().st_size > 0
    assert brats(["predict", "--model", "fusion", "--checkpoint", str(tmp_path), "--out", str(out),
                  str(tmp_path / "cases")]) == 1
    assert "missing export" in capsys.readouterr().err
    provenance = load_segmenter("fusion", folder, "cpu").provenance
    assert provenance.train_cases == () and provenance.cv_scores is None

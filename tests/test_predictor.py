"""The in-process predictor, ``brats predict --model unet|sspp`` end to end, and the case figure."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from brats_app.cli import main as brats
from brats_app.registry import REGISTRY, load_segmenter
from brats_core.cases import find_cases, load_case
from brats_core.config import PreprocessConfig
from brats_core.dataset import SliceDataset, stack_context
from brats_core.device import resolve_device
from brats_core.errors import BratsError, CheckpointError
from brats_core.figures import largest_tumour_slice
from brats_core.labels import classes_to_labels, labels_to_classes
from brats_core.metrics import dice
from brats_core.preprocessing import preprocess
from brats_core.synth import make_synthetic_case
from Deep_Learning_Model.export import load_export, write_random_export
from Deep_Learning_Model.heads import restore_labels
from Deep_Learning_Model.model import ModelConfig
from Deep_Learning_Model.predictor import (
    Predictor,
    predict_volume,
    slice_probabilities,
)
from Deep_Learning_Model.visualize import default_slices, render
from Deep_Learning_Model.visualize import main as visualize_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LABEL_SET = {0, 1, 2, 4}


def tiny_config(arch: str = "sspp", **overrides) -> ModelConfig:
    defaults = {"base_width": 8, "input_size": 64, "sspp_windows": (1, 2, 4), "sspp_dim": 16, "sspp_heads": 2}
    return ModelConfig(arch=arch, **{**defaults, **overrides})


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {arch: write_random_export(root / f"{arch}.pt", tiny_config(arch)) for arch in ("unet", "sspp")}


class Oracle(nn.Module):
    """Reads the class index stored in channel 0 of the centre slice and returns one-hot logits."""

    def __init__(self, context: int, num_classes: int = 4) -> None:
        super().__init__()
        self.channel, self.num_classes = 4 * context, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classes = x[:, self.channel].round().long().clamp(0, self.num_classes - 1)
        return 10.0 * nn.functional.one_hot(classes, self.num_classes).permute(0, 3, 1, 2).float()


def oracle_inputs(case, config: PreprocessConfig, binary: bool = False) -> tuple[np.ndarray, object]:
    pre = preprocess(case, config)
    images = pre.images.copy()
    classes = labels_to_classes(pre.labels)
    images[:, 0] = (classes > 0) if binary else classes
    return images, pre.geometry


@pytest.mark.parametrize("context", [0, 2])
def test_predict_volume_returns_to_the_original_grid(context: int) -> None:
    """At native size the way back is exact: an oracle reproduces the seg voxel for voxel, across batches."""
    case = make_synthetic_case("oracle", shape=(50, 44, 30), seed=3, spacing=(1.0, 1.5, 2.0))
    images, geometry = oracle_inputs(case, PreprocessConfig(size=None))
    labels = predict_volume(Oracle(context), images, geometry, "cpu", context=context, batch_size=7)
    assert labels.dtype == np.uint8 and labels.shape == case.shape
    np.testing.assert_array_equal(labels, case.seg)


def test_predict_volume_resized_tta_and_binary() -> None:
    case = make_synthetic_case("oracle", shape=(48, 48, 32), seed=4)
    images, geometry = oracle_inputs(case, PreprocessConfig(size=64))
    labels = predict_volume(Oracle(0), images, geometry, "cpu", tta=True)
    assert dice(labels == 2, case.seg == 2) > 0.9 and dice(labels == 4, case.seg == 4) > 0.8
    images, geometry = oracle_inputs(case, PreprocessConfig(size=64), binary=True)
    binary = predict_volume(Oracle(0, num_classes=2), images, geometry, "cpu")
    assert set(np.unique(binary)) == {0, 2}  # binary models write whole tumour as label 2
    assert dice(binary > 0, case.seg > 0) > 0.9


def test_restore_labels_of_a_softmax_is_the_argmax_of_restore_scores() -> None:
    case = make_synthetic_case("restore", shape=(40, 52, 20), seed=1)
    geometry = preprocess(case, PreprocessConfig(size=32)).geometry
    probs = torch.rand(geometry.crop_shape[2], 4, 32, 32)
    expected = classes_to_labels(geometry.restore_scores(probs.numpy()).argmax(axis=0))
    np.testing.assert_array_equal(restore_labels(probs, geometry, "softmax", chunk=6), expected)


def test_random_export_is_seeded_and_leaves_the_global_rng(tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    first, second = (write_random_export(tmp_path / f"{i}.pt", tiny_config("unet")) for i in range(2))
    assert torch.equal(torch.random.get_rng_state(), state)
    (model_a, config, preprocess_config, meta), (model_b, *_) = load_export(first), load_export(second)
    assert config == tiny_config("unet") and preprocess_config.size == 64
    assert meta["info"]["weights"].startswith("random")
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_context_stacking_matches_the_training_dataset() -> None:
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((5, 4, 8, 8)).astype(np.float32)
    entry = SimpleNamespace(
        case_id="c", path=Path("c"), images=volume, labels=np.zeros((5, 8, 8), np.uint8),
        num_slices=5, brain_slices=np.arange(5), tumour_slices=np.arange(0),
    )
    dataset = SliceDataset([entry], context=2)
    stacked = stack_context(torch.from_numpy(volume), torch.arange(5), context=2)
    for z in range(5):
        np.testing.assert_array_equal(stacked[z].numpy(), dataset[z][0].numpy())


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_slice_probabilities_reads_a_read_only_memmap_batch_by_batch(tmp_path: Path, dtype: type) -> None:
    """Cached slices (read-only memory maps) need no copy by the caller, and batching with context
    neighbours gives the probabilities of the whole volume at once."""
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((9, 4, 8, 8)).astype(dtype)
    np.save(tmp_path / "images.npy", volume)
    images = np.load(tmp_path / "images.npy", mmap_mode="r")
    torch.manual_seed(0)
    model = nn.Conv2d(12, 4, kernel_size=1).eval()  # sees the centre slice and one neighbour on each side
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps a read-only array
        probs = slice_probabilities(model, images, "cpu", context=1, batch_size=2, amp=False)
    whole = torch.from_numpy(volume.astype(np.float32))
    with torch.no_grad():
        expected = torch.softmax(model(stack_context(whole, torch.arange(9), context=1)), dim=1)
    torch.testing.assert_close(probs, expected)


def test_predictor_from_export(exports: dict[str, Path]) -> None:
    case = make_synthetic_case("synth", shape=(48, 48, 32), seed=2)
    for arch, path in exports.items():
        for tta, amp in ((False, True), (True, True), (False, False)):
            model = Predictor.from_export(path, device="auto", tta=tta, batch_size=16, amp=amp)
            assert model.name == arch and model.device == resolve_device(None)
            labels = model.predict(case)
            assert labels.dtype == np.uint8 and labels.shape == case.shape
            assert set(np.unique(labels)) <= LABEL_SET


@pytest.mark.real_data
def test_predictor_on_a_real_sized_case(real_or_synthetic_root: Path, exports: dict[str, Path]) -> None:
    case = load_case(find_cases(real_or_synthetic_root)[0], with_seg=False)
    labels = load_segmenter("sspp", exports["sspp"], "cpu").predict(case)
    assert labels.shape == case.shape and set(np.unique(labels)) <= LABEL_SET


def test_load_segmenter_errors(exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("unet", "sspp"):
        monkeypatch.setitem(REGISTRY, name, replace(REGISTRY[name], default_checkpoint=tmp_path / f"{name}.pt"))
    with pytest.raises(CheckpointError, match=r"no shipped sspp checkpoint; train one with `brats train sspp`"):
        load_segmenter("sspp")
    with pytest.raises(CheckpointError, match="holds a 'unet' model, not 'sspp'"):
        load_segmenter("sspp", exports["unet"])
    with pytest.raises(CheckpointError, match="model export not found"):
        load_segmenter("unet", tmp_path / "missing.pt")
    (tmp_path / "unet.pt").write_bytes((exports["unet"]).read_bytes())
    assert load_segmenter("unet", device="cpu", tta=True).tta is True  # the default checkpoint


@pytest.mark.parametrize("extra", [[], ["--tta"]])
def test_brats_predict_with_a_checkpoint(
    extra: list[str], exports: dict[str, Path], synthetic_root: Path, tmp_path: Path
) -> None:
    case_dir = synthetic_root / "synth_001"
    args = ["predict", "--model", "sspp", "--checkpoint", str(exports["sspp"]), "--device", "cpu", *extra]
    assert brats([*args, "--out", str(tmp_path), str(case_dir)]) == 0
    case = load_case(case_dir)
    image = nib.load(tmp_path / "synth_001.nii.gz")
    assert image.shape == case.shape and image.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.affine, case.affine)
    assert set(np.unique(np.asarray(image.dataobj))) <= LABEL_SET


# --- visualize ----------------------------------------------------------------------------------------------


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_SIGNATURE)


def test_render_with_and_without_true_mask(tmp_path: Path) -> None:
    case = make_synthetic_case("vis", shape=(48, 48, 32), seed=5)
    tumour = np.count_nonzero(case.seg, axis=(0, 1))
    assert default_slices(case, np.zeros(case.shape, np.uint8)) == [int(tumour.argmax())]
    _assert_png(render(case, case.seg, tmp_path / "with_truth.png"))
    pred = case.seg.copy()
    case.seg = None
    assert default_slices(case, pred) == [largest_tumour_slice(pred)]
    _assert_png(render(case, pred, tmp_path / "sub" / "without_truth.png", slices=[3, 16]))
    brain = np.flatnonzero(np.any(case.images != 0, axis=(0, 1, 2)))
    assert default_slices(case, np.zeros_like(pred)) == [int(brain[len(brain) // 2])]  # no tumour anywhere
    with pytest.raises(BratsError, match=r"slices \[40\] outside 0..31"):
        render(case, pred, tmp_path / "bad.png", slices=[40])


def test_visualize_cli(synthetic_root: Path, exports: dict[str, Path], tmp_path: Path) -> None:
    case_dir = synthetic_root / "synth_002"
    case = load_case(case_dir)
    pred_path = tmp_path / "pred.nii.gz"
    nib.save(nib.Nifti1Image(case.seg.astype(np.int16), case.affine), pred_path)
    assert visualize_main([str(case_dir), "--pred", str(pred_path), "--out", str(tmp_path / "a.png")]) == 0
    _assert_png(tmp_path / "a.png")
    args = [str(case_dir), "--model", "unet", "--checkpoint", str(exports["unet"]), "--out", str(tmp_path / "b.png")]
    assert visualize_main([*args, "--slices", "10"]) == 0
    _assert_png(tmp_path / "b.png")
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), case.affine), pred_path)
    with pytest.raises(BratsError, match="shape"):
        visualize_main([str(case_dir), "--pred", str(pred_path), "--out", str(tmp_path / "c.png")])
    nib.save(nib.Nifti1Image(case.seg, 2 * case.affine), pred_path)
    with pytest.raises(BratsError, match="pred.nii.gz: affine differs"):
        visualize_main([str(case_dir), "--pred", str(pred_path), "--out", str(tmp_path / "c.png")])

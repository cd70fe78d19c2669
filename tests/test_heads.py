"""The regions head (sigmoid WT/TC/ET): label reconstruction, restore, loss, export round trip, predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from brats_core.config import PreprocessConfig
from brats_core.errors import BratsError
from brats_core.labels import labels_to_classes, labels_to_regions, region_scores_to_labels, regions_to_labels
from brats_core.postprocess import PostprocessConfig
from brats_core.preprocessing import preprocess
from brats_core.synth import make_synthetic_case
from Deep_Learning_Model.export import (
    load_export,
    read_export,
    record_postprocess,
    write_random_export,
)
from Deep_Learning_Model.heads import region_probabilities, restore_labels
from Deep_Learning_Model.model import ModelConfig, build_model
from Deep_Learning_Model.predictor import Predictor, predict_volume
from Deep_Learning_Model.serialization import save_atomic
from Deep_Learning_Model.training.losses import RegionBCEDiceLoss, build_loss, region_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RegionOracle(nn.Module):
    """Reads the class index stored in channel 0 of the centre slice and returns WT/TC/ET logits of +-10."""

    def __init__(self, context: int) -> None:
        super().__init__()
        self.channel = 4 * context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classes = x[:, self.channel].round().long().clamp(0, 3)
        return 20.0 * region_targets(classes) - 10.0


def test_region_label_reconstruction_round_trip() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 1, 2, 4], dtype=np.uint8), size=(20, 16, 12))
    regions = labels_to_regions(labels)
    np.testing.assert_array_equal(regions_to_labels(regions), labels)
    scores = np.where(regions, 0.9, 0.1)
    np.testing.assert_array_equal(region_scores_to_labels(scores), labels)
    # nesting: ET without WT/TC is still ET; TC without WT is core; a high threshold drops a region
    lone = np.zeros((3, 4), dtype=np.float32)
    lone[2, 0], lone[1, 1], lone[0, 2] = 0.9, 0.9, 0.9
    np.testing.assert_array_equal(region_scores_to_labels(lone), [4, 1, 2, 0])
    np.testing.assert_array_equal(region_scores_to_labels(lone, (0.95, 0.5, 0.5)), [4, 1, 0, 0])
    with pytest.raises(ValueError, match="3 region scores"):
        region_scores_to_labels(lone[:2])


def test_restore_regions_is_the_threshold_of_restore_scores() -> None:
    case = make_synthetic_case("restore", shape=(40, 52, 20), seed=1)
    geometry = preprocess(case, PreprocessConfig(size=32)).geometry
    probs = torch.rand(geometry.crop_shape[2], 3, 32, 32)
    thresholds = (0.4, 0.5, 0.6)
    restored = geometry.restore_scores(probs.numpy())
    expected = region_scores_to_labels(restored, thresholds)
    outside = np.ones(case.shape, dtype=bool)  # restore_scores says WT there, restore_regions background
    x0, x1, y0, y1, z0, z1 = geometry.bbox
    outside[x0:x1, y0:y1, z0:z1] = False
    expected[outside] = 0
    np.testing.assert_array_equal(geometry.restore_regions(probs, thresholds, chunk=6), expected)
    np.testing.assert_array_equal(restore_labels(probs, geometry, "regions", thresholds), expected)


def test_softmax_probabilities_convert_to_regions() -> None:
    probs = torch.softmax(torch.randn(2, 4, 5, 5), dim=1)
    wt, tc, et = region_probabilities(probs, "softmax").unbind(1)
    torch.testing.assert_close(wt, 1 - probs[:, 0])
    torch.testing.assert_close(tc, probs[:, 1] + probs[:, 3])
    torch.testing.assert_close(et, probs[:, 3])


@pytest.mark.parametrize("context", [0, 1])
def test_regions_head_predicts_back_to_the_original_grid(context: int) -> None:
    """At native size a perfect regions model reproduces the seg voxel for voxel (sigmoid, restore, nesting)."""
    case = make_synthetic_case("oracle", shape=(50, 44, 30), seed=3, spacing=(1.0, 1.5, 2.0))
    pre = preprocess(case, PreprocessConfig(size=None))
    images = pre.images.copy()
    images[:, 0] = labels_to_classes(pre.labels)
    labels = predict_volume(RegionOracle(context), images, pre.geometry, "cpu", context=context, batch_size=7,
                            head="regions", tta=True)
    np.testing.assert_array_equal(labels, case.seg)


def test_region_loss_is_small_when_right_and_large_when_core_is_called_edema() -> None:
    target = torch.zeros(2, 16, 16, dtype=torch.int64)
    target[:, 4:12, 4:12] = 2
    target[:, 6:10, 6:10] = 3
    loss = RegionBCEDiceLoss()
    perfect = 40.0 * region_targets(target) - 20.0
    assert loss(perfect, target).item() < 1e-3
    edema = 40.0 * region_targets(torch.where(target == 3, 2, target)) - 20.0
    assert loss(edema, target).item() > 0.5
    assert isinstance(build_loss("regions"), RegionBCEDiceLoss)


def test_regions_model_config_and_validation() -> None:
    config = ModelConfig(arch="unet", base_width=4, input_size=32, head="regions")
    assert config.out_channels == 3
    assert build_model(config)(torch.zeros(1, 4, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(BratsError, match="head 'sigmoid'"):
        ModelConfig(head="sigmoid")
    with pytest.raises(BratsError, match="needs num_classes 4"):
        ModelConfig(head="regions", num_classes=2)


def test_export_round_trip_of_the_head_and_old_exports_load_as_softmax(tmp_path: Path) -> None:
    config = ModelConfig(arch="unet", base_width=4, input_size=32, head="regions")
    path = write_random_export(tmp_path / "regions.pt", config)
    model, loaded, _, meta = load_export(path)
    assert loaded == config and loaded.head == "regions" and meta["postprocess"] == PostprocessConfig().to_dict()
    payload = read_export(path)
    old = {**payload, "model_config": {k: v for k, v in payload["model_config"].items() if k != "head"}}
    old["state_dict"] = build_model(ModelConfig(arch="unet", base_width=4, input_size=32)).state_dict()
    save_atomic(old, tmp_path / "old.pt")
    assert load_export(tmp_path / "old.pt")[1].head == "softmax"
    case = make_synthetic_case("synth", shape=(40, 40, 24), seed=2)
    labels = Predictor.from_export(path, device="cpu").predict(case)
    assert labels.shape == case.shape and set(np.unique(labels)) <= {0, 1, 2, 4}


def test_predictor_applies_recorded_postprocessing(tmp_path: Path) -> None:
    config = ModelConfig(arch="unet", base_width=4, input_size=32, head="regions")
    path = write_random_export(tmp_path / "regions.pt", config)
    case = make_synthetic_case("synth", shape=(40, 40, 24), seed=2)
    raw = Predictor.from_export(path, device="cpu").predict(case)
    record_postprocess(path, PostprocessConfig(thresholds=(0.01, 0.01, 0.99), et_min_mm3=1e9), {"cases": 3})
    predictor = Predictor.from_export(path, device="cpu")
    assert predictor.postprocess.thresholds == (0.01, 0.01, 0.99)
    assert predictor.meta["info"]["postprocess_tuning"] == {"cases": 3}
    labels = predictor.predict(case)
    assert not (labels == 4).any() and np.count_nonzero(labels) >= np.count_nonzero(raw)
    payload = read_export(path)
    save_atomic({**payload, "postprocess": {"thresholds": [2, 0.5, 0.5]}}, tmp_path / "bad.pt")
    with pytest.raises(Exception, match="invalid post-processing record"):
        load_export(tmp_path / "bad.pt")

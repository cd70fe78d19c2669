"""Batch augmentation and the two batch paths (DataLoader workers, device-resident slices): same batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from brats_core.cache import build_cache, cache_path, open_cache
from brats_core.cases import find_cases
from brats_core.config import PreprocessConfig
from brats_core.dataset import SliceDataset
from brats_core.errors import BratsError
from brats_core.split import save_split
from Deep_Learning_Model.training.augment import augment_batch
from Deep_Learning_Model.training.batches import AugmentedBatches, ResidentSlices, batch_seed, epoch_batches
from Deep_Learning_Model.training.config import STRONG_AUGMENT, AugmentConfig, make_config
from Deep_Learning_Model.training.data import TrainingData
from Deep_Learning_Model.training.distributed import DistContext
from Deep_Learning_Model.training.loop import Trainer
from Deep_Learning_Model.training.sampler import SliceSampler

SIZE = 32
EVERYTHING = AugmentConfig(flip_prob=1.0, affine_prob=1.0, intensity_prob=1.0, gamma_prob=1.0, noise_prob=1.0,
                           blur_prob=1.0)
NOTHING = AugmentConfig(flip_prob=0.0, affine_prob=0.0, intensity_prob=0.0)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(seed: int = 0, batch: int = 6, channels: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images = np.zeros((batch, channels, SIZE, SIZE), dtype=np.float32)
    images[:, :, 6:26, 8:24] = rng.standard_normal((batch, channels, 20, 16))
    targets = np.zeros((batch, SIZE, SIZE), dtype=np.int64)
    targets[:, 10:18, 12:20] = 2
    targets[:, 12:16, 14:18] = 3
    return torch.from_numpy(images), torch.from_numpy(targets)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_augmentation_keeps_shapes_labels_and_background_and_is_seeded():
    images, targets = _batch(channels=12)
    before = images.clone()
    for seed in range(5):
        out, labels = augment_batch(images, targets, EVERYTHING, _generator(seed))
        assert out.shape == images.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
        assert labels.shape == targets.shape and labels.dtype == torch.int64
        assert set(labels.unique().tolist()) <= {0, 2, 3}  # nearest neighbour: no new label values
        assert (out[:, :, :2, :] == 0).all()  # the zero border stays background (rotation+zoom reach row 2)
    assert torch.equal(images, before)  # inputs untouched
    first = augment_batch(images, targets, EVERYTHING, _generator(7))
    second = augment_batch(images, targets, EVERYTHING, _generator(7))
    other = augment_batch(images, targets, EVERYTHING, _generator(8))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], other[0])


def test_flip_only_augmentation_is_an_exact_mirror_and_nothing_is_the_identity():
    images, targets = _batch(1)
    out, labels = augment_batch(images, targets, AugmentConfig(flip_prob=1.0, affine_prob=0.0, intensity_prob=0.0),
                                _generator(0))
    assert torch.equal(out, images.flip(-1).flip(-2)) and torch.equal(labels, targets.flip(-1).flip(-2))
    out, labels = augment_batch(images, targets, NOTHING, _generator(0))
    assert torch.equal(out, images) and torch.equal(labels, targets)


@pytest.mark.parametrize("field", ["intensity_prob", "gamma_prob", "noise_prob", "blur_prob"])
def test_intensity_transforms_change_only_the_brain(field: str):
    images, targets = _batch(2, channels=12)
    images[:, 4:8] = images[:, 0:4]  # the same slice as neighbour
    out, labels = augment_batch(images, targets, AugmentConfig(**{**NOTHING.to_dict(), field: 1.0}), _generator(3))
    assert torch.equal(labels, targets)
    assert not torch.allclose(out, images)
    background = (images == 0).all(dim=1, keepdim=True).expand_as(images)
    assert (out[background] == 0).all()
    if field in ("intensity_prob", "gamma_prob", "blur_prob"):  # one change per modality across the context
        torch.testing.assert_close(out[:, 4:8], out[:, 0:4])


def test_gamma_keeps_each_modality_range():
    images, targets = _batch(4)
    out, _ = augment_batch(images, targets, AugmentConfig(**{**NOTHING.to_dict(), "gamma_prob": 1.0}), _generator(0))
    torch.testing.assert_close(out.amin(dim=(2, 3)), images.amin(dim=(2, 3)))
    torch.testing.assert_close(out.amax(dim=(2, 3)), images.amax(dim=(2, 3)))


@pytest.mark.parametrize(("change", "message"), [
    ({"gamma_prob": 1.5}, "gamma_prob must be in"), ({"blur_sigma": (1.0, 0.5)}, "blur_sigma"),
    ({"noise_sd": -1.0}, "sds must be"),
])  # fmt: skip
def test_invalid_augmentation_config_raises(change, message):
    with pytest.raises(BratsError, match=message):
        AugmentConfig(**change)


@pytest.fixture(scope="module")
def train_set(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("batches")
    cases = find_cases(synthetic_root)[:3]
    build_cache(cases, PreprocessConfig(size=SIZE), cache_root=root, progress=False)
    ids = [c.case_id for c in cases]
    split = save_split({"seed": 0, "train": ids[:2], "val": ids[2:], "test": [], "folds": [ids[:2], ids[2:]]},
                       root / "split.json")
    return cache_path(PreprocessConfig(size=SIZE), root), split


@pytest.mark.parametrize("workers", [0, 2])
def test_resident_slices_give_the_same_batches_as_the_dataloader_path(train_set, workers: int):
    """For a fixed seed, the device-resident loader (here on CPU tensors) equals the DataLoader workers' path."""
    cache, _ = train_set
    dataset = SliceDataset(open_cache(cache, ["synth_000", "synth_001"]), context=1, slices="brain")
    sampler = SliceSampler(dataset.has_tumour, 24, oversample=0.5, seed=3)
    batches = epoch_batches(sampler, epoch=2, batch_size=8)
    assert batches.shape == (3, 8)
    seeds = [batch_seed(3, 2, 0, b) for b in range(len(batches))]
    loader = DataLoader(AugmentedBatches(dataset, batches, STRONG_AUGMENT, seeds), batch_size=None,
                        num_workers=workers)
    resident = ResidentSlices(dataset, "cpu")
    assert resident.images.dtype == torch.float16 and resident.nbytes > 0
    for (a_images, a_targets), (b_images, b_targets) in zip(loader, resident.batches(batches, STRONG_AUGMENT, seeds),
                                                            strict=True):
        assert a_images.shape == (8, 12, SIZE, SIZE)
        assert torch.equal(a_images, b_images) and torch.equal(a_targets, b_targets)
    raw = ResidentSlices(dataset, "cpu").gather(torch.from_numpy(batches[0]))
    for row, item in enumerate(batches[0]):  # unaugmented: exactly the data set's items
        image, target = dataset[int(item)]
        assert torch.equal(raw[0][row], image) and torch.equal(raw[1][row], target)


def test_resident_training_equals_the_dataloader_training(train_set, tmp_path: Path):
    """One epoch of a tiny U-Net with the regions head: identical weights from both batch paths."""
    cache, split = train_set
    states = []
    for resident in (False, True):
        cfg = make_config("cv27", model="unet", size=SIZE, base_width=4, batch_size=4, epochs=1,
                          max_steps_per_epoch=3, device="cpu", resident=resident, out=str(tmp_path / str(resident)))
        train = open_cache(cache, ["synth_000", "synth_001"])
        dataset = SliceDataset(train, context=cfg.context, slices="brain")  # cv27's context
        data = TrainingData(dataset, open_cache(cache, ["synth_002"]), train[0].config, split)
        trainer = Trainer(cfg, data, DistContext(), torch.device("cpu"))
        trainer.fit()
        assert trainer.history[-1]["val_mean_dice"] is not None
        states.append(trainer.net.state_dict())
    for a, b in zip(*(s.values() for s in states), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("option", "message"), [
    (["--augment", "heavy"], "unknown augmentation 'heavy'; choose default, strong"),
    (["--head", "sigmoid"], "invalid choice: 'sigmoid'"),
])  # fmt: skip
def test_bad_recipe_options_are_refused(option, message, capsys):
    from Deep_Learning_Model.train import main as train_main

    with pytest.raises(SystemExit):
        train_main(["--model", "unet", *option])
    assert message in capsys.readouterr().err


def test_recipe_options_select_the_config():
    from Deep_Learning_Model.train import build_parser

    args = vars(build_parser().parse_args(["--augment", "strong", "--head", "regions", "--resident"]))
    assert args == {"augment": STRONG_AUGMENT, "head": "regions", "resident": True}

"""SliceDataset over the slice cache: shapes, context clamping, targets, tumour flags, workers, no NIfTI reads."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from brats_core.cache import CacheEntry, build_cache, open_cache
from brats_core.cases import find_cases
from brats_core.config import PreprocessConfig
from brats_core.dataset import SliceDataset
from brats_core.errors import BratsError
from brats_core.labels import labels_to_classes
from brats_core.synth import make_synthetic_case, write_case

SIZE = 32


@pytest.fixture(scope="module")
def entries(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[CacheEntry]:
    root = tmp_path_factory.mktemp("slice_cache")
    return build_cache(
        find_cases(synthetic_root)[:3], PreprocessConfig(size=SIZE), cache_root=root, progress=False
    )


@pytest.fixture
def no_nifti(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any NIfTI read fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the dataset read a NIfTI file")

    monkeypatch.setattr(nib, "load", refuse)
    monkeypatch.setattr(nib.loadsave, "load", refuse)


def test_items_with_context_0(entries: list[CacheEntry], no_nifti: None) -> None:
    dataset = SliceDataset(entries)
    assert len(dataset) == sum(e.num_slices for e in entries) == len(dataset.index) == len(dataset.has_tumour)
    for item in (0, len(dataset) // 2, len(dataset) - 1):
        image, target = dataset[item]
        number, z = dataset.index[item]
        entry = entries[number]
        assert image.dtype == torch.float32 and image.shape == (4, SIZE, SIZE)
        assert target.dtype == torch.int64 and target.shape == (SIZE, SIZE)
        np.testing.assert_array_equal(image.numpy(), entry.images[z].astype(np.float32))
        np.testing.assert_array_equal(target.numpy(), labels_to_classes(entry.labels[z]))


def test_index_and_has_tumour(entries: list[CacheEntry]) -> None:
    dataset = SliceDataset(entries)
    expected_index = [(n, z) for n, e in enumerate(entries) for z in range(e.num_slices)]
    np.testing.assert_array_equal(dataset.index, expected_index)
    expected = np.concatenate([np.asarray(e.labels).any(axis=(1, 2)) for e in entries])
    assert dataset.has_tumour.dtype == bool and 0 < expected.sum() < len(expected)
    np.testing.assert_array_equal(dataset.has_tumour, expected)
    for item in np.flatnonzero(dataset.has_tumour)[:5]:
        assert dataset[int(item)][1].max() > 0


def test_targets_are_class_indices(entries: list[CacheEntry]) -> None:
    dataset = SliceDataset(entries)
    values = set()
    for item in np.flatnonzero(dataset.has_tumour):
        values |= set(torch.unique(dataset[int(item)][1]).tolist())
    assert values == {0, 1, 2, 3}  # every BraTS label present, mapped 0/1/2/4 -> 0/1/2/3


def test_context_1_clamps_at_the_ends(entries: list[CacheEntry]) -> None:
    dataset = SliceDataset(entries, context=1)
    entry = entries[0]
    last = entry.num_slices - 1
    slices = np.asarray(entry.images, dtype=np.float32)
    for z, neighbours in ((0, (0, 0, 1)), (5, (4, 5, 6)), (last, (last - 1, last, last))):
        image, target = dataset[z]  # entry 0 comes first: item z is slice z
        assert image.shape == (12, SIZE, SIZE)
        np.testing.assert_array_equal(image.numpy(), slices[list(neighbours)].reshape(12, SIZE, SIZE))
        np.testing.assert_array_equal(image[4:8].numpy(), slices[z])  # the centre slice's 4 modalities
        np.testing.assert_array_equal(target.numpy(), labels_to_classes(entry.labels[z]))


def test_context_2_shape(entries: list[CacheEntry]) -> None:
    image, _ = SliceDataset(entries, context=2)[0]
    assert image.shape == (20, SIZE, SIZE)


def test_brain_slices_only(entries: list[CacheEntry]) -> None:
    dataset = SliceDataset(entries, slices="brain")
    assert len(dataset) == sum(len(e.brain_slices) for e in entries)
    for (number, z), flag in zip(dataset.index, dataset.has_tumour, strict=True):
        assert entries[number].brain[z].any()
        assert flag == (z in entries[number].tumour_slices)


def test_dataloader_with_two_workers(entries: list[CacheEntry]) -> None:
    dataset = SliceDataset(entries, context=1)
    loader = DataLoader(dataset, batch_size=16, num_workers=2, shuffle=False)
    batches = list(loader)
    assert sum(len(images) for images, _ in batches) == len(dataset)
    images, targets = batches[1]
    assert images.shape == (16, 12, SIZE, SIZE) and targets.shape == (16, SIZE, SIZE)
    np.testing.assert_array_equal(images[3].numpy(), dataset[19][0].numpy())
    np.testing.assert_array_equal(targets[3].numpy(), dataset[19][1].numpy())


def test_dataset_pickles_without_the_arrays(entries: list[CacheEntry]) -> None:
    dataset = SliceDataset(entries)
    payload = pickle.dumps(dataset)  # what a spawn/forkserver DataLoader worker receives
    assert len(payload) < 20_000
    clone = pickle.loads(payload)
    np.testing.assert_array_equal(clone[3][0].numpy(), dataset[3][0].numpy())


def test_reads_only_the_cache(entries: list[CacheEntry], no_nifti: None) -> None:
    dataset = SliceDataset(open_cache(entries[0].path.parent), context=1)
    total = sum(int(dataset[i][1].sum()) for i in range(len(dataset)))
    assert total > 0


def test_entry_without_labels_is_refused(tmp_path: Path) -> None:
    case = make_synthetic_case("no_seg", shape=(32, 32, 16), seed=2)
    case.seg = None
    files = write_case(case, tmp_path / "data")
    entries = build_cache([files], PreprocessConfig(size=SIZE), cache_root=tmp_path / "cache", progress=False)
    with pytest.raises(BratsError, match="without a segmentation.*: no_seg"):
        SliceDataset(entries)


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"context": -1}, "context"), ({"slices": "tumour"}, "slices")]
)
def test_bad_arguments(entries: list[CacheEntry], kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SliceDataset(entries, **kwargs)

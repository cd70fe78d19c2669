"""The training batches of an epoch, from DataLoader workers or from a training set resident on the device.

Both paths take the same slice indices (the epoch's draw of :class:`SliceSampler`, cut into consecutive batches)
and augment batch ``b`` of epoch ``e`` with :func:`augment_batch` and a ``torch.Generator`` seeded by
``batch_seed(seed, e, rank, b)`` on the batch's device:

- :class:`AugmentedBatches` (CPU path): a map-style data set whose item ``b`` is batch ``b``, read from the
  cache's memory maps and augmented inside a DataLoader worker (``batch_size=None``); the batches do not depend
  on the number of workers;
- :class:`ResidentSlices` (GPU path): every slice of the training cases held on the device as float16 tensors
  (about 0.5 GB for the 27 cases at 128 px), the batch gathered (with its context neighbours) and augmented
  there, so no worker, no host-to-device copy and no Python per slice.

On the same device, with the same seed, both paths give identical batches (``tests/test_batches.py`` checks it
on CPU tensors).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from brats_core.dataset import SliceDataset
from brats_core.labels import labels_to_classes
from Deep_Learning_Model.training.augment import augment_batch
from Deep_Learning_Model.training.config import AugmentConfig
from Deep_Learning_Model.training.sampler import SliceSampler

Batch = tuple[torch.Tensor, torch.Tensor]


def derived_seed(*values: int) -> int:
    """A 32-bit seed mixing ``values`` (e.g. the run seed, the epoch and the rank)."""
    return int(np.random.SeedSequence(list(values)).generate_state(1)[0])


def batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    """Seed of the augmentation generator of one batch."""
    return derived_seed(seed, epoch, rank, batch, 2)


def epoch_batches(sampler: SliceSampler, epoch: int, batch_size: int) -> np.ndarray:
    """This rank's slice indices of ``epoch``, shape (steps, batch_size) (a partial last batch is dropped)."""
    sampler.set_epoch(epoch)
    indices = np.fromiter(iter(sampler), dtype=np.int64)
    steps = len(indices) // batch_size
    return indices[: steps * batch_size].reshape(steps, batch_size)


def _augment(images: torch.Tensor, targets: torch.Tensor, augment: AugmentConfig | None, seed: int) -> Batch:
    if augment is None:
        return images, targets
    generator = torch.Generator(device=images.device).manual_seed(seed)
    return augment_batch(images, targets, augment, generator)


class AugmentedBatches(Dataset):
    """Item ``b``: batch ``b`` of ``batches`` (rows of indices into ``dataset``), stacked and augmented."""

    def __init__(self, dataset: SliceDataset, batches: np.ndarray, augment: AugmentConfig | None,
                 seeds: list[int]) -> None:
        self.dataset, self.batches, self.augment, self.seeds = dataset, batches, augment, seeds

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> Batch:
        items = [self.dataset[int(i)] for i in self.batches[b]]
        images = torch.stack([image for image, _ in items])
        targets = torch.stack([target for _, target in items])
        return _augment(images, targets, self.augment, self.seeds[b])


class ResidentSlices:
    """The slices of a :class:`SliceDataset`'s cases on ``device``: float16 images, uint8 classes, and for each
    item of the data set the rows of its ``2k+1`` context slices (clamped at its volume's ends)."""

    def __init__(self, dataset: SliceDataset, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.context = dataset.context
        starts = np.cumsum([0] + [e.num_slices for e in dataset.entries])
        self.images = torch.cat([torch.from_numpy(np.array(e.images, dtype=np.float16)) for e in dataset.entries])
        self.images = self.images.to(self.device)
        self.classes = torch.cat([torch.from_numpy(labels_to_classes(e.labels)) for e in dataset.entries])
        self.classes = self.classes.to(self.device)
        number, z = dataset.index[:, 0], dataset.index[:, 1]
        depth = np.asarray([e.num_slices for e in dataset.entries])[number]
        offsets = np.arange(-self.context, self.context + 1)
        rows = starts[number, None] + np.clip(z[:, None] + offsets[None, :], 0, depth[:, None] - 1)
        self.rows = torch.from_numpy(rows.astype(np.int64)).to(self.device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.images, self.classes, self.rows))

    def gather(self, items: torch.Tensor) -> Batch:
        """Images float32 (B, 4 * (2k+1), S, S) and class indices int64 (B, S, S) of data-set items ``items``."""
        rows = self.rows[items.to(self.device)]
        images = self.images[rows].float()  # (B, 2k+1, 4, S, S)
        targets = self.classes[rows[:, self.context]].long()
        return images.reshape(images.shape[0], -1, *images.shape[-2:]), targets

    def batches(self, batches: np.ndarray, augment: AugmentConfig | None, seeds: list[int]) -> Iterator[Batch]:
        """The augmented batches of one epoch, on the device."""
        index = torch.from_numpy(batches).to(self.device)
        for b in range(len(batches)):
            images, targets = self.gather(index[b])
            yield _augment(images, targets, augment, seeds[b])

"""PyTorch dataset of axial slices read from the slice cache's memory maps (never from NIfTI)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from brats_core.cache import CacheEntry
from brats_core.errors import BratsError
from brats_core.labels import labels_to_classes


def neighbours(index: torch.Tensor, context: int, length: int) -> torch.Tensor:
    """Slice indices ``(..., 2k+1)`` of the neighbours ``-k .. k`` of each ``index``, clamped to the volume's
    ``length`` slices (beyond an end the end slice repeats): the one definition of the context layout."""
    offsets = torch.arange(-context, context + 1, device=index.device)
    return (index[..., None] + offsets).clamp(0, length - 1)


def stack_context(volume: torch.Tensor, index: torch.Tensor, context: int) -> torch.Tensor:
    """Network inputs (B, (2k+1)*C, S, S) of slices ``index`` of ``volume`` (Z', C, S, S): for each offset
    -k..k the C modalities of that neighbour (:func:`neighbours`), as :class:`SliceDataset` items."""
    return volume[neighbours(index, context, volume.shape[0])].flatten(1, 2)


class SliceDataset(Dataset):
    """Every slice of every cache entry (``slices="all"``) or only those with brain (``"brain"``).

    Item ``i`` is ``(image, target)``: ``image`` float32 ``(4 * (2k + 1), S, S)`` with ``k = context``, channels
    ordered by slice offset ``-k .. k`` and, within each offset, the 4 modalities in ``MODALITIES`` order
    (channel ``4 * (offset + k) + m``); neighbours beyond the volume's ends repeat the end slice. ``target`` is
    int64 ``(S, S)`` class indices 0..3 (labels 0/1/2/4, see :func:`brats_core.labels.labels_to_classes`).
    In-plane axes are (X, Y) of the original volume. Augmentation happens per batch, outside the data set
    (:mod:`Deep_Learning_Model.training.batches`).

    ``index`` is the ``(entry, slice)`` pair of each item and ``has_tumour`` whether its slice has any label > 0
    (for tumour oversampling). Entries pickle as their cache path, so DataLoader workers re-open the maps.
    """

    def __init__(
        self,
        entries: Sequence[CacheEntry],
        context: int = 0,
        slices: str = "all",
    ) -> None:
        if isinstance(context, bool) or not isinstance(context, int) or context < 0:
            raise ValueError(f"context must be an integer >= 0, got {context!r}")
        if slices not in ("all", "brain"):
            raise ValueError(f"slices must be 'all' or 'brain', got {slices!r}")
        unlabelled = [f"{e.case_id} ({e.path})" for e in entries if e.labels is None]
        if unlabelled:
            raise BratsError(
                f"cached cases without a segmentation cannot be used for training: {', '.join(unlabelled)}"
            )
        self.entries = list(entries)
        self.context = context
        pairs, tumour = [], []
        for number, entry in enumerate(self.entries):
            chosen = np.arange(entry.num_slices) if slices == "all" else entry.brain_slices
            pairs.append(np.stack([np.full(len(chosen), number), chosen], axis=1))
            tumour.append(np.isin(chosen, entry.tumour_slices))
        self.index: np.ndarray = (
            np.concatenate(pairs).astype(np.int64) if pairs else np.zeros((0, 2), np.int64)
        )
        self.has_tumour: np.ndarray = np.concatenate(tumour) if tumour else np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        number, z = (int(v) for v in self.index[item])
        entry = self.entries[number]
        if self.context == 0:
            stack = entry.images[z : z + 1]
        else:
            stack = entry.images[neighbours(torch.tensor(z), self.context, entry.num_slices).numpy()]
        image = np.asarray(stack, dtype=np.float32).reshape(-1, *stack.shape[-2:])
        target = labels_to_classes(entry.labels[z]).astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(target)

"""A distributed-aware sampler of training slices that oversamples tumour slices.

Each epoch every rank draws the same global list of ``world_size * samples_per_rank`` slice indices from a
generator seeded by ``(seed, epoch)``, and rank ``r`` takes positions ``r, r + world_size, ...``: the ranks see
disjoint parts of one global draw, as with ``DistributedSampler``, and a single process sees the whole draw.

With ``oversample = p`` each draw is, with probability ``p``, a uniformly chosen tumour slice and otherwise a
uniformly chosen slice of any kind (empty slices keep appearing; nnU-Net's foreground oversampling). With
``oversample = None`` the draw is a plain shuffle without replacement (repeated when it must be longer than the
data set).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class SliceSampler(Sampler[int]):
    """Indices into a slice data set with per-slice ``has_tumour`` flags; call :meth:`set_epoch` every epoch."""

    def __init__(
        self,
        has_tumour: np.ndarray,
        samples_per_rank: int,
        oversample: float | None = 0.5,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        has_tumour = np.asarray(has_tumour, dtype=bool)
        if has_tumour.size == 0:
            raise ValueError("cannot sample from an empty data set")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.size = has_tumour.size
        self.tumour = np.flatnonzero(has_tumour)
        self.samples_per_rank = samples_per_rank
        self.oversample = oversample
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_indices(self) -> np.ndarray:
        """The draw shared by all ranks for the current epoch (``world_size * samples_per_rank`` indices)."""
        total = self.samples_per_rank * self.world_size
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.oversample is None:
            rounds = -(-total // self.size)
            return np.concatenate([rng.permutation(self.size) for _ in range(rounds)])[:total]
        any_slice = rng.integers(self.size, size=total)
        if self.tumour.size == 0:
            return any_slice
        from_tumour = rng.random(total) < self.oversample
        return np.where(from_tumour, self.tumour[rng.integers(self.tumour.size, size=total)], any_slice)

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices()[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.samples_per_rank

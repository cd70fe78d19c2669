"""On-the-fly augmentation of one training slice, run inside the DataLoader workers.

Intensity changes (per modality, inside the brain), mirroring of both in-plane axes, and one resampling for a
small rotation plus isotropic scaling: bilinear for the images, nearest neighbour for the labels. All
randomness comes from torch's global generator, which the DataLoader seeds per worker from the loader's
generator (and the training loop reseeds per epoch), so an epoch's augmentations are reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from Deep_Learning_Model.training.config import MODALITY_CHANNELS, AugmentConfig


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class SliceAugmentation:
    """``transform`` of :class:`brats_core.dataset.SliceDataset`: ``(image float32 (C, S, S), target int64 (S, S))``
    numpy arrays in, augmented numpy arrays of the same shapes and dtypes out.

    Channels are ``2k+1`` neighbouring slices of the four modalities (``channel % 4`` is the modality), so
    each modality gets one intensity change across its neighbours.
    """

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    def __call__(self, image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = torch.as_tensor(image, dtype=torch.float32)
        target = torch.as_tensor(target, dtype=torch.int64)
        cfg = self.config
        if float(torch.rand(())) < cfg.intensity_prob:
            image = self._intensity(image)
        for dim in (-2, -1):
            if float(torch.rand(())) < cfg.flip_prob:
                image, target = image.flip(dim), target.flip(dim)
        if float(torch.rand(())) < cfg.affine_prob:
            image, target = self._rotate_scale(image, target)
        return image.contiguous().numpy(), target.contiguous().numpy()

    def _intensity(self, image: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        scale = 1.0 + cfg.intensity_scale_sd * torch.randn(MODALITY_CHANNELS)
        shift = cfg.intensity_shift_sd * torch.randn(MODALITY_CHANNELS)
        modality = torch.arange(image.shape[0]) % MODALITY_CHANNELS
        brain = (image != 0).any(dim=0)
        changed = image * scale[modality, None, None] + shift[modality, None, None]
        return torch.where(brain, changed, image)

    def _rotate_scale(self, image: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        angle = math.radians(_uniform(-cfg.rotate_degrees, cfg.rotate_degrees))
        zoom = _uniform(*cfg.scale_range)
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        theta = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=torch.float32)
        grid = F.affine_grid(theta, [1, 1, *image.shape[-2:]], align_corners=False)
        image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        labels = F.grid_sample(
            target[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        return image, labels[0, 0].round().long()

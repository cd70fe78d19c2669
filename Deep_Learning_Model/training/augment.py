"""Augmentation of a whole batch of training slices with batched torch ops and one seeded ``torch.Generator``.

One function, :func:`augment_batch`, serves both data paths (:mod:`Deep_Learning_Model.training.batches`): the
DataLoader workers on the CPU and the device-resident training set on the GPU. Every random parameter is drawn
from the generator in a fixed order with shapes that depend only on the batch size and the configuration, so a
batch's augmentation is a function of (its slices, the config, the generator's seed and device).

Transforms, in order, each chosen per sample with its probability (a probability of 0 draws nothing):

1. intensity: per-modality scale ``N(1, sd)`` and shift ``N(0, sd)``;
2. gamma: per modality, ``x -> lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma`` with ``lo, hi`` the modality's
   range in the sample and ``gamma`` uniform in ``gamma_range``;
3. Gaussian noise with an sd uniform in ``[0, noise_sd]``;
4. Gaussian blur with sigma uniform in ``blur_sigma``;
5. mirroring of each in-plane axis;
6. one resampling for a rotation in +- ``rotate_degrees`` and an isotropic scaling in ``scale_range``: bilinear
   for the images, nearest neighbour for the labels.

Intensity transforms 1-4 act inside the brain only (the background stays 0, as at inference) and treat the
``2k+1`` context slices of a modality alike (``channel % 4`` is the modality).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from Deep_Learning_Model.training.config import MODALITY_CHANNELS, AugmentConfig


class _Draw:
    """Random tensors on ``device`` from ``generator``."""

    def __init__(self, generator: torch.Generator, device: torch.device) -> None:
        self.generator, self.device = generator, device

    def uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=self.generator, device=self.device)

    def normal(self, mean: float, sd: float, *shape: int) -> torch.Tensor:
        return mean + sd * torch.randn(shape, generator=self.generator, device=self.device)

    def chosen(self, prob: float, count: int) -> torch.Tensor:
        return self.uniform(0.0, 1.0, count) < prob


def _gamma(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Gamma per (sample, modality) of ``x`` (B, K, M, S, S), keeping each modality's range in the sample."""
    low = x.amin(dim=(1, 3, 4), keepdim=True)
    span = (x.amax(dim=(1, 3, 4), keepdim=True) - low).clamp_min(1e-6)
    unit = ((x - low) / span).clamp(0.0, 1.0)
    return low + span * unit.pow(gamma[:, None, :, None, None])


def _blur(images: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, S, S) with one sigma per sample (grouped convolutions, zero padding)."""
    batch, channels, height, width = images.shape
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # (B*C, 2r+1)
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.conv2d(flat, kernel[:, None, :, None], padding=(radius, 0), groups=batch * channels)
    flat = F.conv2d(flat, kernel[:, None, None, :], padding=(0, radius), groups=batch * channels)
    return flat.reshape(batch, channels, height, width)


def _rotate_scale(images: torch.Tensor, targets: torch.Tensor, angle: torch.Tensor,
                  zoom: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One resampling per sample: bilinear images (B, C, S, S), nearest labels (B, S, S)."""
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, [images.shape[0], 1, *images.shape[-2:]], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    labels = F.grid_sample(targets[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return images, labels[:, 0].round().long()


def augment_batch(
    images: torch.Tensor, targets: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented copies of ``images`` float32 (B, C, S, S) and ``targets`` int64 (B, S, S) class indices.

    ``generator`` lives on the tensors' device; the inputs are not modified. Nothing synchronises with the
    device (no data-dependent shapes, no ``.item()``), so on a GPU the batch is queued behind the training step.
    """
    cfg, batch = config, images.shape[0]
    draw = _Draw(generator, images.device)
    size = images.shape[-2:]
    brain = (images != 0).any(dim=1, keepdim=True)  # (B, 1, S, S), before any change
    x = images.reshape(batch, -1, MODALITY_CHANNELS, *size)  # (B, K, M, S, S)
    inside = brain[:, :, None]
    if cfg.intensity_prob > 0:
        chosen = draw.chosen(cfg.intensity_prob, batch)
        scale = draw.normal(1.0, cfg.intensity_scale_sd, batch, MODALITY_CHANNELS)[:, None, :, None, None]
        shift = draw.normal(0.0, cfg.intensity_shift_sd, batch, MODALITY_CHANNELS)[:, None, :, None, None]
        x = torch.where(chosen[:, None, None, None, None] & inside, x * scale + shift, x)
    if cfg.gamma_prob > 0:
        chosen = draw.chosen(cfg.gamma_prob, batch)
        gamma = draw.uniform(*cfg.gamma_range, batch, MODALITY_CHANNELS)
        x = torch.where(chosen[:, None, None, None, None] & inside, _gamma(x, gamma), x)
    x = x.reshape(images.shape)
    if cfg.noise_prob > 0:
        chosen = draw.chosen(cfg.noise_prob, batch)
        sd = draw.uniform(0.0, cfg.noise_sd, batch)[:, None, None, None]
        noise = draw.normal(0.0, 1.0, *x.shape) * sd
        x = torch.where(chosen[:, None, None, None] & brain, x + noise, x)
    if cfg.blur_prob > 0:
        chosen = draw.chosen(cfg.blur_prob, batch)
        sigma = draw.uniform(*cfg.blur_sigma, batch)
        radius = max(math.ceil(3.0 * cfg.blur_sigma[1]), 1)  # from the config: no device sync
        x = torch.where(chosen[:, None, None, None] & brain, _blur(x, sigma, radius), x)
    y = targets
    if cfg.flip_prob > 0:
        for dim in (-2, -1):
            chosen = draw.chosen(cfg.flip_prob, batch)
            x = torch.where(chosen[:, None, None, None], x.flip(dim), x)
            y = torch.where(chosen[:, None, None], y.flip(dim), y)
    if cfg.affine_prob > 0:
        chosen = draw.chosen(cfg.affine_prob, batch)
        angle = draw.uniform(-cfg.rotate_degrees, cfg.rotate_degrees, batch) * (math.pi / 180.0)
        zoom = draw.uniform(*cfg.scale_range, batch)
        # the whole batch is resampled and the chosen samples kept: no data-dependent shapes, no device sync
        moved, labels = _rotate_scale(x, y, angle, zoom)
        x = torch.where(chosen[:, None, None, None], moved, x)
        y = torch.where(chosen[:, None, None], labels, y)
    return x.contiguous(), y.contiguous()

"""Case -> axial slices for the 2D models, and the exact way back to the original voxel grid.

``preprocess`` crops the volume to the brain's bounding box, z-scores each modality inside the brain (after
clipping to percentiles), zero-pads each axial slice to a square and resizes it to ``config.size``. In-plane
axes stay in (X, Y) order: ``images[z, c, i, j]`` comes from voxel ``(x0 + i', y0 + j', z0 + z)`` where
``(i', j')`` is ``(i, j)`` mapped back through the resize and the padding. ``Geometry`` records all of it,
so ``restore_labels`` / ``restore_scores`` put slice-level outputs back in the case's original geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from brats_core.cases import Case
from brats_core.config import PreprocessConfig
from brats_core.errors import BratsError

#: Floor of the intensity standard deviation used for z-scoring (a constant modality maps to 0).
STD_FLOOR = 1e-6


def brain_mask(images: np.ndarray) -> np.ndarray:
    """Brain voxels of skull-stripped images (C, X, Y, Z): non-zero in any modality. Returns bool (X, Y, Z)."""
    return np.any(np.asarray(images) != 0, axis=0)


def _nearest_index(size_out: int, size_in: int) -> np.ndarray:
    """Source index of each output pixel for a nearest-neighbour resize (pixel centres, like OpenCV/PIL)."""
    index = np.floor((np.arange(size_out) + 0.5) * (size_in / size_out)).astype(np.intp)
    return np.minimum(index, size_in - 1)


def _resize_bilinear(array: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of the last two axes of (N, C, H, W) float32 to (size, size), no antialiasing."""
    if array.shape[-1] == size and array.shape[-2] == size:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return out.numpy()


@dataclass(frozen=True)
class Geometry:
    """Where the preprocessed slices came from; enough to map slice outputs back to the original volume.

    ``bbox`` is the brain's bounding box ``(x0, x1, y0, y1, z0, z1)`` (end exclusive). Each cropped axial
    slice (``x1 - x0`` by ``y1 - y0``) is zero-padded to a square of side ``side``, placed at offset
    ``pads = (pad_x, pad_y)``, then resized to ``size`` by ``size``.
    """

    shape: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]
    spacing: tuple[float, float, float]
    bbox: tuple[int, int, int, int, int, int]
    side: int
    pads: tuple[int, int]
    size: int

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (lists and numbers only)."""
        return {
            "shape": list(self.shape),
            "affine": [list(row) for row in self.affine],
            "spacing": list(self.spacing),
            "bbox": list(self.bbox),
            "side": self.side,
            "pads": list(self.pads),
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        return cls(
            shape=tuple(int(v) for v in data["shape"]),
            affine=tuple(tuple(float(v) for v in row) for row in data["affine"]),
            spacing=tuple(float(v) for v in data["spacing"]),
            bbox=tuple(int(v) for v in data["bbox"]),
            side=int(data["side"]),
            pads=tuple(int(v) for v in data["pads"]),
            size=int(data["size"]),
        )

    @property
    def crop_shape(self) -> tuple[int, int, int]:
        x0, x1, y0, y1, z0, z1 = self.bbox
        return x1 - x0, y1 - y0, z1 - z0

    def _check(self, array: np.ndarray, what: str, ndim: int) -> None:
        depth = self.crop_shape[2]
        if array.ndim != ndim or array.shape[0] != depth or array.shape[-2:] != (self.size, self.size):
            layout = "(Z', S, S)" if ndim == 3 else "(Z', K, S, S)"
            raise ValueError(
                f"{what} must have layout {layout} = ({depth}, ..., {self.size}, {self.size}), got {array.shape}"
            )

    def restore_labels(self, labels: np.ndarray) -> np.ndarray:
        """Slice labels (Z', S, S) -> uint8 (X, Y, Z) in the original grid (nearest neighbour, 0 outside the crop).

        At ``size == side`` (``PreprocessConfig(size=None)``) the round trip is exact.
        """
        labels = np.asarray(labels)
        self._check(labels, "labels", 3)
        width, height, _ = self.crop_shape
        pad_x, pad_y = self.pads
        rows = _nearest_index(self.side, self.size)[pad_x : pad_x + width]
        cols = _nearest_index(self.side, self.size)[pad_y : pad_y + height]
        crop = labels[:, rows[:, None], cols[None, :]].astype(np.uint8, copy=False)  # (Z', W, H)
        out = np.zeros(self.shape, dtype=np.uint8)
        x0, x1, y0, y1, z0, z1 = self.bbox
        out[x0:x1, y0:y1, z0:z1] = crop.transpose(1, 2, 0)
        return out

    def restore_scores(self, scores: np.ndarray) -> np.ndarray:
        """Slice scores (Z', K, S, S) -> float32 (K, X, Y, Z), bilinear in-plane.

        Outside the crop, channel 0 (background) is 1 and the others 0, so an argmax over K gives
        background there.
        """
        scores = np.asarray(scores, dtype=np.float32)
        self._check(scores, "scores", 4)
        width, height, _ = self.crop_shape
        pad_x, pad_y = self.pads
        square = _resize_bilinear(scores, self.side)
        crop = square[:, :, pad_x : pad_x + width, pad_y : pad_y + height]  # (Z', K, W, H)
        out = np.zeros((scores.shape[1], *self.shape), dtype=np.float32)
        out[0] = 1.0
        x0, x1, y0, y1, z0, z1 = self.bbox
        out[:, x0:x1, y0:y1, z0:z1] = crop.transpose(1, 2, 3, 0)
        return out


@dataclass
class Preprocessed:
    """Axial slices of one case: ``images`` (Z', 4, S, S) float32, ``labels`` (Z', S, S) uint8 0/1/2/4 or None,
    ``brain`` (Z', S, S) bool, and the ``geometry`` to map outputs back."""

    images: np.ndarray
    labels: np.ndarray | None
    brain: np.ndarray
    geometry: Geometry


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int, int, int]:
    bounds = []
    for axis in range(3):
        present = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
        bounds += [int(present[0]), int(present[-1]) + 1]
    return tuple(bounds)


def _zscore(channel: np.ndarray, brain: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Clip to the brain's intensity percentiles, z-score inside the brain, 0 outside. float32."""
    values = channel[brain]
    low, high = np.percentile(values, percentiles)
    values = np.clip(values, low, high)
    mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
    out = np.zeros(channel.shape, dtype=np.float32)
    out[brain] = (values - mean) / max(std, STD_FLOOR)
    return out


def preprocess(case: Case, config: PreprocessConfig = PreprocessConfig()) -> Preprocessed:
    """Crop to the brain, z-score each modality inside it and resample axial slices to ``config.size``.

    Raises :class:`BratsError` when the case has no brain voxel (all images zero).
    """
    brain = brain_mask(case.images)
    if not brain.any():
        where = case.files.images.get("t1", "in memory")
        raise BratsError(f"case '{case.case_id}' ({where}): every image is zero, no brain voxel to segment")
    bbox = _bbox(brain)
    x0, x1, y0, y1, z0, z1 = bbox
    brain = brain[x0:x1, y0:y1, z0:z1]
    width, height, depth = brain.shape
    side = max(width, height)
    pads = ((side - width) // 2, (side - height) // 2)
    size = side if config.size is None else int(config.size)
    geometry = Geometry(
        shape=case.shape,
        affine=tuple(tuple(float(v) for v in row) for row in np.asarray(case.affine)),
        spacing=tuple(float(v) for v in case.spacing),
        bbox=bbox,
        side=side,
        pads=pads,
        size=size,
    )
    rows, cols = slice(pads[0], pads[0] + width), slice(pads[1], pads[1] + height)

    square = np.zeros((depth, case.images.shape[0], side, side), dtype=np.float32)
    for channel, image in enumerate(case.images):
        normalised = _zscore(image[x0:x1, y0:y1, z0:z1], brain, config.clip_percentiles)
        square[:, channel, rows, cols] = normalised.transpose(2, 0, 1)
    images = _resize_bilinear(square, size)

    index = _nearest_index(size, side)

    def slices(volume: np.ndarray, dtype: type) -> np.ndarray:
        padded = np.zeros((depth, side, side), dtype=dtype)
        padded[:, rows, cols] = volume.transpose(2, 0, 1)
        return padded[:, index[:, None], index[None, :]]

    labels = None if case.seg is None else slices(case.seg[x0:x1, y0:y1, z0:z1], np.uint8)
    return Preprocessed(images=images, labels=labels, brain=slices(brain, bool), geometry=geometry)

"""Case -> axial slices for the 2D models, and the exact way back to the original voxel grid.

``preprocess`` crops the volume to the brain's bounding box, z-scores each modality inside the brain (after
clipping to percentiles), zero-pads each axial slice to a square and resizes it to ``config.size``. In-plane
axes stay in (X, Y) order: ``images[z, c, i, j]`` comes from voxel ``(x0 + i', y0 + j', z0 + z)`` where
``(i', j')`` is ``(i, j)`` mapped back through the resize and the padding. ``Geometry`` records all of it,
so ``to_grid`` maps any other volume of the case onto the same slices and ``restore_labels`` /
``restore_scores`` / ``restore_argmax`` / ``restore_regions`` put slice-level outputs back in the case's original geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from brats_core.cases import Case
from brats_core.config import PreprocessConfig
from brats_core.errors import BratsError
from brats_core.labels import DEFAULT_THRESHOLDS, region_scores_to_labels

#: Floor of the intensity standard deviation used for z-scoring (a constant modality maps to 0).
STD_FLOOR = 1e-6


def brain_mask(images: np.ndarray) -> np.ndarray:
    """Brain voxels of skull-stripped images (C, X, Y, Z): non-zero in any modality. Returns bool (X, Y, Z)."""
    return np.any(np.asarray(images) != 0, axis=0)


def _nearest_index(size_out: int, size_in: int) -> np.ndarray:
    """Source index of each output pixel for a nearest-neighbour resize (pixel centres: as PIL's NEAREST and
    OpenCV's INTER_NEAREST_EXACT; OpenCV's INTER_NEAREST takes floor(i * size_in / size_out) instead)."""
    index = np.floor((np.arange(size_out) + 0.5) * (size_in / size_out)).astype(np.intp)
    return np.minimum(index, size_in - 1)


def _resize_bilinear(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of the last two axes of (N, C, H, W) float32 to (size, size), no antialiasing."""
    if tensor.shape[-1] == size and tensor.shape[-2] == size:
        return tensor
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


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

    def _check(self, array: np.ndarray | torch.Tensor, what: str, ndim: int) -> None:
        depth = self.crop_shape[2]
        if array.ndim != ndim or array.shape[0] != depth or tuple(array.shape[-2:]) != (self.size, self.size):
            layout = "(Z', S, S)" if ndim == 3 else "(Z', K, S, S)"
            expected = f"({depth}, ..., {self.size}, {self.size})"
            raise ValueError(f"{what} must have layout {layout} = {expected}, got {tuple(array.shape)}")

    # Original grid -> slices: crop to ``bbox``, zero-pad each axial slice to the square, resize to ``size``.
    def _crop(self, volume: np.ndarray) -> np.ndarray:
        x0, x1, y0, y1, z0, z1 = self.bbox
        return volume[..., x0:x1, y0:y1, z0:z1]

    def _pad(self, crop: np.ndarray, dtype: type) -> np.ndarray:
        """Cropped (..., W, H, D) -> (D, ..., side, side): each axial slice zero-padded to the square."""
        width, height, depth = self.crop_shape
        pad_x, pad_y = self.pads
        square = np.zeros((depth, *crop.shape[:-3], self.side, self.side), dtype=dtype)
        square[..., pad_x : pad_x + width, pad_y : pad_y + height] = np.moveaxis(crop, -1, 0)
        return square

    def _grid_bilinear(self, crop: np.ndarray) -> np.ndarray:
        """Cropped (K, W, H, D) -> float32 (Z', K, S, S), bilinear in-plane."""
        return _resize_bilinear(torch.from_numpy(self._pad(crop, np.float32)), self.size).numpy()

    def _grid_nearest(self, crop: np.ndarray) -> np.ndarray:
        """Cropped (W, H, D) labels or mask -> (Z', S, S) of the same dtype, nearest neighbour in-plane."""
        index = _nearest_index(self.size, self.side)
        return self._pad(crop, crop.dtype)[:, index[:, None], index[None, :]]

    def to_grid(self, volume: np.ndarray) -> np.ndarray:
        """A volume (K, X, Y, Z) in the case's original grid -> float32 (Z', K, S, S) on the slices.

        The crop, square padding and bilinear resize that :func:`preprocess` applies to the (normalised)
        images, so e.g. an atlas lines up with ``Preprocessed.images`` voxel for voxel. Linear in ``volume``.
        """
        volume = np.asarray(volume)
        if volume.ndim != 4 or tuple(volume.shape[1:]) != tuple(self.shape):
            expected = f"(K, {', '.join(map(str, self.shape))})"
            raise ValueError(f"volume must have layout (K, X, Y, Z) = {expected}, got {volume.shape}")
        return self._grid_bilinear(self._crop(volume))

    # Slices -> original grid.
    def _from_grid(self, block: torch.Tensor) -> torch.Tensor:
        """Slice scores (N, K, S, S) -> float32 (N, K, W, H) on the crop: resized to the square, unpadded."""
        width, height, _ = self.crop_shape
        pad_x, pad_y = self.pads
        square = _resize_bilinear(block.float(), self.side)
        return square[:, :, pad_x : pad_x + width, pad_y : pad_y + height]

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
        crop = labels[:, rows[:, None], cols[None, :]]  # (Z', W, H)
        out = np.zeros(self.shape, dtype=np.uint8)
        self._crop(out)[...] = crop.transpose(1, 2, 0)
        return out

    def restore_scores(self, scores: np.ndarray) -> np.ndarray:
        """Slice scores (Z', K, S, S) -> float32 (K, X, Y, Z), bilinear in-plane.

        Outside the crop, channel 0 (background) is 1 and the others 0, so an argmax over K gives
        background there.
        """
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        self._check(scores, "scores", 4)
        crop = self._from_grid(torch.from_numpy(scores)).numpy()  # (Z', K, W, H)
        out = np.zeros((scores.shape[1], *self.shape), dtype=np.float32)
        out[0] = 1.0
        self._crop(out)[...] = crop.transpose(1, 2, 3, 0)
        return out

    def restore_argmax(
        self, scores: np.ndarray | torch.Tensor, labels: Sequence[int] | None = None, chunk: int = 32
    ) -> np.ndarray:
        """``restore_scores(scores).argmax(axis=0)`` as uint8 (X, Y, Z), without a (K, X, Y, Z) float volume.

        Class index k is written as ``labels[k]`` when ``labels`` is given (e.g. ``LABELS``: BraTS labels);
        outside the crop the value is that of class 0. The argmax is taken ``chunk`` slices at a time on the
        crop, so a BraTS case never holds its 143 MB of restored float scores.
        """
        table = np.arange(scores.shape[1], dtype=np.uint8) if labels is None else np.asarray(labels, np.uint8)

        def decide(crop: torch.Tensor) -> np.ndarray:
            # argmax over a contiguous last axis: several times faster than over dim 1 of an NCHW tensor
            return table[crop.permute(0, 2, 3, 1).contiguous().argmax(dim=-1).numpy()]

        return self._restore_chunks(scores, decide, int(table[0]), chunk)

    def restore_regions(
        self, scores: np.ndarray | torch.Tensor, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, chunk: int = 32
    ) -> np.ndarray:
        """BraTS labels (X, Y, Z) uint8 of region scores (Z', 3, S, S) (WT, TC, ET probabilities).

        The scores are restored bilinearly like :meth:`restore_scores`, thresholded and nested by
        :func:`brats_core.labels.region_scores_to_labels`, ``chunk`` slices at a time; 0 outside the crop.
        """
        thresholds = tuple(float(t) for t in thresholds)
        return self._restore_chunks(
            scores, lambda crop: region_scores_to_labels(crop.numpy().swapaxes(0, 1), thresholds), 0, chunk
        )

    def _restore_chunks(self, scores: np.ndarray | torch.Tensor, decide, outside: int, chunk: int) -> np.ndarray:
        """uint8 (X, Y, Z): ``decide`` maps each chunk of scores restored on the crop, float32 (N, K, W, H), to
        uint8 (N, W, H); voxels outside the crop get ``outside``."""
        self._check(scores, "scores", 4)
        width, height, depth = self.crop_shape
        values = np.empty((depth, width, height), dtype=np.uint8)
        for start in range(0, depth, chunk):
            block = scores[start : start + chunk]
            block = block if torch.is_tensor(block) else torch.from_numpy(np.array(block, dtype=np.float32))
            values[start : start + chunk] = decide(self._from_grid(block))
        out = np.full(self.shape, outside, dtype=np.uint8)
        self._crop(out)[...] = values.transpose(1, 2, 0)
        return out


@dataclass
class Preprocessed:
    """Axial slices of one case: ``images`` (Z', 4, S, S) float32, ``labels`` (Z', S, S) uint8 0/1/2/4 or None,
    ``brain`` (Z', S, S) bool, and the ``geometry`` to map outputs back."""

    images: np.ndarray
    labels: np.ndarray | None
    brain: np.ndarray
    geometry: Geometry


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int, int, int] | None:
    """``(x0, x1, y0, y1, z0, z1)`` (end exclusive) of the non-zero voxels of a 3D array; None if there is none."""
    bounds = []
    for axis in range(3):
        present = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
        if not present.size:
            return None
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
    bbox = bounding_box(brain)
    x0, x1, y0, y1, _, _ = bbox
    width, height = x1 - x0, y1 - y0
    side = max(width, height)
    size = side if config.size is None else int(config.size)
    geometry = Geometry(
        shape=case.shape,
        affine=tuple(tuple(float(v) for v in row) for row in np.asarray(case.affine)),
        spacing=tuple(float(v) for v in case.spacing),
        bbox=bbox,
        side=side,
        pads=((side - width) // 2, (side - height) // 2),
        size=size,
    )
    brain = geometry._crop(brain)
    crops = geometry._crop(case.images)
    normalised = np.stack([_zscore(image, brain, config.clip_percentiles) for image in crops])
    labels = None if case.seg is None else geometry._grid_nearest(geometry._crop(case.seg).astype(np.uint8))
    images = geometry._grid_bilinear(normalised)
    return Preprocessed(images=images, labels=labels, brain=geometry._grid_nearest(brain), geometry=geometry)

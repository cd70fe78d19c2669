"""Per-voxel features of a preprocessed case, computed with whole-volume filters (scipy.ndimage).

Rows are voxels of the preprocessed grid (Z', S, S) addressed by flat index; columns are, in order:

- ``<modality>``: the four z-scored intensities;
- ``<modality>_mean_s<sigma>`` / ``<modality>_std_s<sigma>``: Gaussian-weighted local mean and standard
  deviation at each scale ``sigma`` (voxels of the grid);
- ``<modality>_grad``: Gaussian gradient magnitude;
- ``pos_z``, ``pos_x``, ``pos_y``: position inside the brain's bounding box, each in [0, 1];
- ``prior_WT``, ``prior_TC``, ``prior_ET``: the naive atlas (fraction of training cases with the region at that
  voxel), mapped into the grid through the case's crop and resize.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from brats_core.config import MODALITIES, REGIONS
from brats_core.preprocessing import Geometry, Preprocessed, bounding_box
from Naive_Model.naive_mean_model import LEVELS

#: Bump when a feature's computation changes without its name changing; checkpoints of another version are refused.
FEATURES_VERSION = 1


@dataclass(frozen=True)
class FeatureConfig:
    """Parameters of :func:`voxel_features`; stored in every checkpoint and compared on load."""

    scales: tuple[float, ...] = (1.0, 3.0)
    gradient_sigma: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureConfig:
        return cls(scales=tuple(float(s) for s in data["scales"]), gradient_sigma=float(data["gradient_sigma"]))

    def image_feature_names(self) -> list[str]:
        names = list(MODALITIES)
        for sigma in self.scales:
            names += [f"{m}_{stat}_s{sigma:g}" for m in MODALITIES for stat in ("mean", "std")]
        names += [f"{m}_grad" for m in MODALITIES]
        return names + ["pos_z", "pos_x", "pos_y"]

    def feature_names(self) -> list[str]:
        return self.image_feature_names() + [f"prior_{region}" for region in REGIONS]


def volume_to_grid(volume: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Maps (K, X, Y, Z) in the case's original grid -> float32 (K, Z', S, S), the layout of the priors.

    :meth:`Geometry.to_grid` (the crop, padding and resize of the images), channel first.
    """
    return geometry.to_grid(volume).transpose(1, 0, 2, 3)


def atlas_prior(levels: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The prior of a case: uint8 atlas ``levels`` (3, X, Y, Z) as fractions of training cases, on its grid."""
    return volume_to_grid(np.asarray(levels, dtype=np.float32) / LEVELS, geometry)


def _local_stats(volume: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    mean = ndimage.gaussian_filter(volume, sigma, mode="constant")
    square_mean = ndimage.gaussian_filter(volume * volume, sigma, mode="constant")
    return mean, np.sqrt(np.maximum(square_mean - mean * mean, 0.0))


def _positions(brain: np.ndarray, index: np.ndarray) -> list[np.ndarray]:
    """Coordinates of the flat ``index`` voxels, scaled to [0, 1] inside the brain's bounding box."""
    box = bounding_box(brain) or tuple(v for size in brain.shape for v in (0, size))
    coords = np.unravel_index(index, brain.shape)
    return [(coord - box[2 * a]) / max(box[2 * a + 1] - 1 - box[2 * a], 1) for a, coord in enumerate(coords)]


def image_features(pre: Preprocessed, index: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Image and position features (every column but the priors) of the voxels at flat ``index``; float32."""
    columns: dict[str, np.ndarray] = {}
    for channel, modality in enumerate(MODALITIES):
        volume = np.ascontiguousarray(pre.images[:, channel])
        columns[modality] = volume.reshape(-1)[index]
        for sigma in config.scales:
            mean, std = _local_stats(volume, sigma)
            columns[f"{modality}_mean_s{sigma:g}"] = mean.reshape(-1)[index]
            columns[f"{modality}_std_s{sigma:g}"] = std.reshape(-1)[index]
        grad = ndimage.gaussian_gradient_magnitude(volume, config.gradient_sigma, mode="constant")
        columns[f"{modality}_grad"] = grad.reshape(-1)[index]
    for name, position in zip(("pos_z", "pos_x", "pos_y"), _positions(pre.brain, index), strict=True):
        columns[name] = position
    return np.stack([columns[name] for name in config.image_feature_names()], axis=1).astype(np.float32)


def prior_features(prior: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Columns ``prior_*`` from a (3, Z', S, S) prior on the grid, at flat ``index``; float32."""
    return prior.reshape(prior.shape[0], -1)[:, index].T.astype(np.float32, copy=False)


def voxel_features(pre: Preprocessed, prior: np.ndarray, index: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """All features (``config.feature_names()`` order) of the voxels at flat ``index`` of the grid."""
    return np.concatenate([image_features(pre, index, config), prior_features(prior, index)], axis=1)

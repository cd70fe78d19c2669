"""PNG overlay of one slice of a predicted label map on the case's FLAIR, for quick looks."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from brats_core.errors import BratsError

#: View name -> array axis it cuts (arrays are (X, Y, Z) as stored in the NIfTI files).
AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
#: RGB colour of each label (ITK-SNAP-like: NCR/NET red, ED green, ET yellow) and the overlay opacity.
COLOURS: dict[int, tuple[int, int, int]] = {1: (230, 40, 40), 2: (40, 200, 70), 4: (250, 220, 30)}
ALPHA = 0.45


def _plane(path: Path, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` along ``axis`` of a 3D NIfTI file, read without loading the whole volume."""
    proxy = nib.load(path).dataobj
    shape = tuple(int(s) for s in proxy.shape[:3])
    key: list[slice | int] = [slice(None)] * len(proxy.shape)
    key[axis] = index
    plane_shape = tuple(s for a, s in enumerate(shape) if a != axis)
    return np.asarray(proxy[tuple(key)], dtype=np.float32).reshape(plane_shape)


def default_index(labels_path: Path, axis: int) -> int:
    """The slice with the most tumour voxels along ``axis`` (the middle slice when there is no tumour)."""
    labels = np.asanyarray(nib.load(labels_path).dataobj)
    counts = np.count_nonzero(labels, axis=tuple(a for a in range(3) if a != axis))
    return int(np.argmax(counts)) if counts.any() else labels.shape[axis] // 2


def render_overlay(image_path: Path, labels_path: Path, view: str, index: int | None) -> bytes:
    """PNG bytes: the image slice in grey (1st-99th percentile window) with the labels coloured on top.

    The slice is shown with its first in-plane axis left to right and its second bottom to top.
    """
    axis = AXES[view]
    size = int(nib.load(labels_path).shape[axis])
    if index is None:
        index = default_index(labels_path, axis)
    if not 0 <= index < size:
        raise BratsError(f"slice index {index} is out of range for the {view} axis (0..{size - 1})")
    image, labels = _plane(image_path, axis, index), _plane(labels_path, axis, index).astype(np.uint8)
    inside = image[image > 0]
    low, high = np.percentile(inside, (1, 99)) if inside.size else (0.0, 1.0)
    grey = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for label, colour in COLOURS.items():
        mask = labels == label
        rgb[mask] = (1.0 - ALPHA) * rgb[mask] + ALPHA * np.asarray(colour, dtype=np.float32)
    picture = np.ascontiguousarray(np.rot90(rgb.astype(np.uint8)))
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()

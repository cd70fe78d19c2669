"""PNG overlay of one slice of a predicted label map on the case's FLAIR, for quick looks."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from brats_core.errors import BratsError
from brats_core.figures import PLANES, intensity_window, largest_tumour_slice, overlay, to_grey


def _plane(path: Path, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` along ``axis`` of a 3D NIfTI file, read without loading the whole volume."""
    proxy = nib.load(path).dataobj
    key: list[slice | int] = [slice(None)] * len(proxy.shape)
    key[axis] = index
    plane_shape = tuple(int(s) for a, s in enumerate(proxy.shape[:3]) if a != axis)
    return np.asarray(proxy[tuple(key)], dtype=np.float32).reshape(plane_shape)


def render_overlay(image_path: Path, labels_path: Path, view: str, index: int | None) -> bytes:
    """PNG bytes: the image slice in grey with the labels coloured on top, drawn by :mod:`brats_core.figures`.

    ``index`` None: the slice with the most tumour. The grey window is the 1st-99th percentiles of the slice's
    non-zero voxels. The slice is shown with its first in-plane axis left to right and its second bottom to top.
    The label map (uint8, small) is read once; of the image only the slice is read.
    """
    axis = PLANES[view]  # arrays are (X, Y, Z) as stored in the NIfTI files
    labels = np.asanyarray(nib.load(labels_path).dataobj)
    size = labels.shape[axis]
    if index is None:
        index = largest_tumour_slice(labels, axis)
    if not 0 <= index < size:
        raise BratsError(f"slice index {index} is out of range for the {view} axis (0..{size - 1})")
    image = _plane(image_path, axis, index)
    grey = to_grey(image, intensity_window(image))
    picture = np.ascontiguousarray(np.rot90(overlay(grey, np.take(labels, index, axis=axis))))
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()

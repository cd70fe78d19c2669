"""Slices, colour maps and overlays for the UI: pure numpy, no Streamlit, so they are unit-tested directly.

Volumes are first reoriented to RAS+ from their affine (:func:`to_ras`), so every plane is shown the same way
whatever the scanner's voxel order: radiological convention (patient's right on the image's left), anterior
up in axial slices, superior up in coronal and sagittal slices.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

from brats_core.config import LABEL_NAMES, MODALITIES
from brats_core.labels import labels_to_regions

#: Plane name -> axis of a RAS+ volume that indexes its slices.
PLANES: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
#: Display colour (RGB) of each tumour label; background stays transparent.
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {1: (230, 57, 70), 2: (67, 170, 80), 4: (255, 214, 10)}
#: Colour of the binary whole-tumour view.
WHOLE_TUMOUR_COLOUR: tuple[int, int, int] = (0, 180, 255)
WHOLE_TUMOUR_NAME = "WT (whole tumour)"
#: Display names of the modalities, in the channel order of ``brats_core.config.MODALITIES``.
MODALITY_NAMES: dict[str, str] = dict(zip(MODALITIES, ("T1", "T1ce", "T2", "FLAIR"), strict=True))


def to_ras(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """View of a 3D volume (or of each channel of a channel-first 4D one) in RAS+ voxel order."""
    orientation = io_orientation(np.asarray(affine, dtype=float))
    if volume.ndim == 4:
        return np.stack([apply_orientation(channel, orientation) for channel in volume])
    return apply_orientation(volume, orientation)


def extract_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2D slice ``index`` of a RAS+ volume in ``plane``, laid out for display (rows top to bottom)."""
    axis = PLANES[plane]
    index = int(np.clip(index, 0, volume.shape[axis] - 1))
    return np.take(volume, index, axis=axis).T[::-1, ::-1]


def largest_tumour_slice(labels: np.ndarray, plane: str) -> int:
    """Index of the slice in ``plane`` with the most tumour voxels (labels > 0); the middle one if none.

    Among slices tied for the most, the median one (a slab of equal slices starts in its middle).
    """
    axis = PLANES[plane]
    other = tuple(a for a in range(3) if a != axis)
    counts = np.count_nonzero(labels, axis=other)
    if not counts.any():
        return labels.shape[axis] // 2
    best = np.flatnonzero(counts == counts.max())
    return int(best[len(best) // 2])


def intensity_window(
    volume: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)
) -> tuple[float, float]:
    """Display window of one modality: percentiles of its non-zero (brain) voxels, sampled every 2nd voxel."""
    sample = volume[::2, ::2, ::2]
    values = sample[sample != 0]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    return low, high if high > low else low + 1.0


def to_grey(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """A 2D intensity slice as uint8 grey levels through ``window`` (low, high)."""
    low, high = window
    scaled = (np.asarray(image, dtype=np.float32) - low) / (high - low)
    return (np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _colour_table(binary: bool) -> np.ndarray:
    table = np.zeros((256, 3), dtype=np.uint8)
    for label, colour in LABEL_COLOURS.items():
        table[label] = WHOLE_TUMOUR_COLOUR if binary else colour
    return table


def labels_rgb(labels: np.ndarray, binary: bool = False) -> np.ndarray:
    """RGB uint8 image of a 2D label slice (0/1/2/4) on black; ``binary``: the whole tumour in one colour."""
    return _colour_table(binary)[np.asarray(labels, dtype=np.uint8)]


def overlay(grey: np.ndarray, labels: np.ndarray, binary: bool = False, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 image: ``labels`` coloured over a uint8 ``grey`` slice with opacity ``alpha``."""
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    tumour = labels_to_regions(labels)[0]
    colours = labels_rgb(labels, binary).astype(np.float32)
    rgb[tumour] = (1.0 - alpha) * rgb[tumour] + alpha * colours[tumour]
    return rgb.round().astype(np.uint8)


def legend(binary: bool = False) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, RGB colour) of each colour used by :func:`labels_rgb` and :func:`overlay`."""
    if binary:
        return [(WHOLE_TUMOUR_NAME, WHOLE_TUMOUR_COLOUR)]
    return [(LABEL_NAMES[label], colour) for label, colour in LABEL_COLOURS.items()]


def legend_html(binary: bool = False) -> str:
    """The legend as coloured squares and names, one per line (constant HTML, no user input)."""
    items = [
        f'<div><span style="display:inline-block;width:1em;height:1em;margin-right:0.5em;'
        f'vertical-align:middle;background:rgb{colour}"></span>{name}</div>'
        for name, colour in legend(binary)
    ]
    return '<div class="brats-legend"><strong>Legend</strong>' + "".join(items) + "</div>"

"""Slices and colour choices for the UI: pure numpy, no Streamlit, so they are unit-tested directly.

Volumes are first reoriented to RAS+ from their affine (:func:`to_ras`), so every plane is shown the same way
whatever the scanner's voxel order: radiological convention (patient's right on the image's left), anterior
up in axial slices, superior up in coronal and sagittal slices. Grey levels, label colours and overlays come
from :mod:`brats_core.figures`, as in the API's PNG overlay and the comparison figures.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

from brats_core.config import LABEL_NAMES
from brats_core.figures import LABEL_COLOURS, PLANES, intensity_window

#: Colour of the binary whole-tumour view.
WHOLE_TUMOUR_COLOUR: tuple[int, int, int] = (0, 180, 255)
WHOLE_TUMOUR_NAME = "WT (whole tumour)"


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


def volume_window(volume: np.ndarray) -> tuple[float, float]:
    """Display window of one 3D modality: :func:`~brats_core.figures.intensity_window` of every 2nd voxel.

    Sampling every 2nd voxel along each axis reads 8x fewer voxels for practically the same percentiles.
    """
    return intensity_window(volume[::2, ::2, ::2])


def label_colours(binary: bool = False) -> dict[int, tuple[int, int, int]]:
    """Colour of each tumour label, for ``colours=`` of :func:`brats_core.figures.labels_rgb` and ``overlay``.

    The shared :data:`~brats_core.figures.LABEL_COLOURS`, or with ``binary`` the whole tumour in one colour.
    """
    return {label: WHOLE_TUMOUR_COLOUR for label in LABEL_COLOURS} if binary else LABEL_COLOURS


def legend(binary: bool = False) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, RGB colour) of each colour of :func:`label_colours`."""
    if binary:
        return [(WHOLE_TUMOUR_NAME, WHOLE_TUMOUR_COLOUR)]
    return [(LABEL_NAMES[label], colour) for label, colour in LABEL_COLOURS.items()]


def legend_html(binary: bool = False) -> str:
    """The legend as coloured squares and names on one line (constant HTML, no user input)."""
    items = [
        f'<div style="display:inline-block;margin-right:1.5em"><span style="display:inline-block;width:1em;height:1em;'
        f'margin-right:0.5em;vertical-align:middle;background:rgb{colour}"></span>{name}</div>'
        for name, colour in legend(binary)
    ]
    return '<div class="brats-legend"><strong>Legend</strong> ' + "".join(items) + "</div>"

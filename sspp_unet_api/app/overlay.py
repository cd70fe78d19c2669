"""PNG overlay of one slice of a predicted label map on the case's FLAIR, with its slice number and a legend."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from brats_core.config import LABEL_NAMES
from brats_core.errors import BratsError
from brats_core.figures import LABEL_COLOURS, PLANES, intensity_window, largest_tumour_slice, overlay, to_grey

#: The picture is enlarged (nearest neighbour, by a whole factor) to at least this width, so the text fits.
MIN_WIDTH = 320
#: Height in pixels of the band under the slice: one line for the slice number, one for the legend.
BAND_HEIGHT = 44
FONT_SIZE = 13


def _plane(path: Path, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` along ``axis`` of a 3D NIfTI file, read without loading the whole volume."""
    proxy = nib.load(path).dataobj
    key: list[slice | int] = [slice(None)] * len(proxy.shape)
    key[axis] = index
    plane_shape = tuple(int(s) for a, s in enumerate(proxy.shape[:3]) if a != axis)
    return np.asarray(proxy[tuple(key)], dtype=np.float32).reshape(plane_shape)


def slice_caption(view: str, index: int, size: int) -> str:
    """``axial slice 77 of 0-154``: the plane, the index shown and the valid range of the index."""
    return f"{view} slice {index} of 0-{size - 1}"


def annotate(picture: np.ndarray, caption: str) -> Image.Image:
    """The RGB ``picture`` enlarged to at least :data:`MIN_WIDTH` pixels, above a black band holding
    ``caption`` and the legend (a coloured square and the name of each label, as in
    :data:`brats_core.figures.LABEL_COLOURS`)."""
    scale = max(1, -(-MIN_WIDTH // picture.shape[1]))
    enlarged = picture.repeat(scale, axis=0).repeat(scale, axis=1)
    height, width = enlarged.shape[:2]
    canvas = Image.new("RGB", (width, height + BAND_HEIGHT))
    canvas.paste(Image.fromarray(enlarged), (0, 0))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=FONT_SIZE)
    draw.text((6, height + 4), caption, fill=(255, 255, 255), font=font)
    x, y = 6, height + 4 + FONT_SIZE + 8
    for label, colour in LABEL_COLOURS.items():
        draw.rectangle((x, y, x + FONT_SIZE - 2, y + FONT_SIZE - 2), fill=colour)
        x += FONT_SIZE + 4
        draw.text((x, y - 2), LABEL_NAMES[label], fill=(255, 255, 255), font=font)
        x += int(draw.textlength(LABEL_NAMES[label], font=font)) + 14
    return canvas


def render_overlay(image_path: Path, labels_path: Path, view: str, index: int | None) -> bytes:
    """PNG bytes: the image slice in grey with the labels coloured on top, drawn by :mod:`brats_core.figures`,
    above its slice number and the label legend (:func:`annotate`); the caption is also the PNG's ``Slice``
    text field.

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
    caption = slice_caption(view, index, size)
    info = PngInfo()
    info.add_text("Slice", caption)
    buffer = io.BytesIO()
    annotate(picture, caption).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()

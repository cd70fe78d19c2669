"""Colours, overlays and the comparison figures; one definition of how a label map looks, used everywhere.

The colour table, the grey window, the overlay and the choice of the slice to show are plain numpy (RGB
uint8), shared by the figures here, the API's PNG overlay, the UI and ``Deep_Learning_Model.visualize``.
Matplotlib is imported only by the functions that draw figures, so importing the colours stays cheap (API).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from brats_core.config import LABEL_NAMES, LABELS, MODALITIES, REGIONS

#: RGB colour of each tumour label (ITK-SNAP-like): NCR/NET red, ED green, ET yellow; background is not drawn.
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {1: (230, 40, 40), 2: (40, 200, 70), 4: (250, 220, 30)}
#: Opacity of the labels drawn over a grey slice.
OVERLAY_ALPHA = 0.45
#: Plane name -> axis of an (X, Y, Z) volume that indexes its slices (X, Y, Z run left-right, front-back and
#: bottom-top in BraTS files and in RAS+/LPS+ voxel order).
PLANES: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
#: Display names of the modalities, in ``MODALITIES`` order.
MODALITY_NAMES: dict[str, str] = dict(zip(MODALITIES, ("T1", "T1ce", "T2", "FLAIR"), strict=True))


def _colour_table(colours: Mapping[int, tuple[int, int, int]]) -> np.ndarray:
    """Lookup table label value -> RGB uint8 (black where ``colours`` has no entry)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for label, colour in colours.items():
        table[label] = colour
    return table


_COLOUR_TABLE = _colour_table(LABEL_COLOURS)


def intensity_window(image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> tuple[float, float]:
    """Display range of an intensity image: ``percentiles`` of its non-zero (brain) values; (0, 1) if none."""
    image = np.asarray(image)
    values = image[image != 0]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    return low, high if high > low else low + 1.0


def to_grey(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """An intensity image as uint8 grey levels through ``window`` (low, high)."""
    low, high = window
    scaled = (np.asarray(image, dtype=np.float32) - low) / (high - low)
    return (np.clip(scaled, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def labels_rgb(labels: np.ndarray, colours: Mapping[int, tuple[int, int, int]] | None = None) -> np.ndarray:
    """RGB uint8 image of a label map (0/1/2/4) on black, in ``colours`` (default :data:`LABEL_COLOURS`)."""
    table = _COLOUR_TABLE if colours is None else _colour_table(colours)
    return table[np.asarray(labels, dtype=np.uint8)]


def overlay(
    grey: np.ndarray,
    labels: np.ndarray,
    alpha: float = OVERLAY_ALPHA,
    colours: Mapping[int, tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """RGB uint8 image: the tumour labels coloured (as :func:`labels_rgb`) over the uint8 ``grey`` image."""
    rgb = np.repeat(np.asarray(grey, dtype=np.float32)[..., None], 3, axis=-1)
    tumour = np.asarray(labels) > 0
    rgb[tumour] = (1.0 - alpha) * rgb[tumour] + alpha * labels_rgb(labels, colours)[tumour].astype(np.float32)
    return rgb.round().astype(np.uint8)


def largest_tumour_slice(labels: np.ndarray, axis: int = 2) -> int:
    """Index along ``axis`` of the slice with the most tumour voxels (labels > 0); the middle one if none.

    Among slices tied for the most, the median one (a slab of equal slices gives its middle).
    """
    labels = np.asarray(labels)
    counts = np.count_nonzero(labels, axis=tuple(a for a in range(labels.ndim) if a != axis))
    if not counts.any():
        return labels.shape[axis] // 2
    best = np.flatnonzero(counts == counts.max())
    return int(best[len(best) // 2])


def show_plane(ax, picture: np.ndarray) -> None:
    """Draw a uint8 grey (X, Y) or RGB (X, Y, 3) picture of an axial plane on the matplotlib axes ``ax``.

    Columns are X and rows Y, bottom to top (``origin="lower"``); pixels are not smoothed.
    """
    cmap = "gray" if picture.ndim == 2 else None
    ax.imshow(np.swapaxes(np.asarray(picture), 0, 1), cmap=cmap, vmin=0, vmax=255, origin="lower",
              interpolation="nearest")


def legend_handles() -> list:
    """Matplotlib legend patches ``"1: NCR/NET"``, ``"2: ED"``, ``"4: ET"`` in the label colours."""
    from matplotlib.patches import Patch

    return [
        Patch(color=np.asarray(LABEL_COLOURS[label]) / 255.0, label=f"{label}: {LABEL_NAMES[label]}")
        for label in LABELS[1:]
    ]


def save_png(fig, path: Path | str) -> Path:
    """Write the matplotlib figure ``fig`` as a PNG to ``path``, creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def dice_plot(per_case: Mapping[str, Sequence[Mapping]], path: Path | str, title: str = "") -> Path:
    """PNG of the per-case Dice of each model (box plot with every case as a dot), one panel per region.

    ``per_case`` maps a model's display name to its rows (``{"WT_dice": ..., "TC_dice": ..., "ET_dice": ...}``);
    a model without rows gets an empty column.
    """
    from matplotlib.figure import Figure

    names = list(per_case)
    fig = Figure(figsize=(max(6.0, 1.1 * len(names)) * 1.6, 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(REGIONS), sharey=True, squeeze=False)[0]
    rng = np.random.default_rng(0)  # fixed jitter: the same data draws the same figure
    for ax, region in zip(axes, REGIONS, strict=True):
        values = [np.asarray([row[f"{region}_dice"] for row in per_case[name]], dtype=float) for name in names]
        positions = np.arange(1, len(names) + 1)
        drawn = [i for i, v in enumerate(values) if v.size]
        if drawn:
            ax.boxplot([values[i] for i in drawn], positions=positions[drawn], widths=0.6, showfliers=False,
                       medianprops={"color": "black"})
        for i, v in enumerate(values):
            ax.scatter(positions[i] + rng.uniform(-0.15, 0.15, v.size), v, s=14, alpha=0.7, zorder=3)
        ax.set_xticks(positions, names, rotation=35, ha="right", fontsize=8)
        ax.set_xlim(0.4, len(names) + 0.6)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{region} Dice", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Dice per case (3D)")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def case_figure(
    images: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray | None],
    path: Path | str,
    title: str = "",
    captions: Mapping[str, str] | None = None,
    max_columns: int = 6,
) -> Path:
    """PNG of one axial slice: the four modalities, the truth and each prediction (labels over FLAIR).

    ``images`` is (4, X, Y) in ``MODALITIES`` order, ``truth`` and each prediction (X, Y) labels 0/1/2/4; a
    prediction of ``None`` (the model failed) is drawn as an empty panel saying so. ``captions`` adds a second
    title line per prediction (e.g. its Dice on this case).
    """
    from matplotlib.figure import Figure

    captions = captions or {}
    windows = [intensity_window(image) for image in images]
    flair = to_grey(images[MODALITIES.index("flair")], windows[MODALITIES.index("flair")])
    panels: list[tuple[str, np.ndarray | None]] = [
        (MODALITY_NAMES[m], to_grey(images[i], windows[i])) for i, m in enumerate(MODALITIES)
    ]
    panels.append(("truth", overlay(flair, truth)))
    for name, labels in predictions.items():
        caption = f"{name}\n{captions[name]}" if name in captions else name
        panels.append((caption, None if labels is None else overlay(flair, labels)))

    rows = -(-len(panels) // max_columns)
    columns = -(-len(panels) // rows)  # balanced rows: 7 panels -> 4 + 3, not 6 + 1
    fig = Figure(figsize=(2.2 * columns, 2.45 * rows + 0.8), dpi=100, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, (caption, picture) in zip(axes, panels, strict=False):
        if picture is None:
            ax.text(0.5, 0.5, "failed\n(no prediction)", ha="center", va="center", fontsize=9, color="grey")
        else:
            show_plane(ax, picture)
        ax.set_title(caption, fontsize=8)
    fig.legend(handles=legend_handles(), loc="outside lower center", ncol=len(LABELS) - 1, fontsize=9,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path)

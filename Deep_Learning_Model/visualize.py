"""PNG figure of a case: the four modalities, the true mask (when present), the predicted mask and an overlay.

``python -m Deep_Learning_Model.visualize CASE --out case.png [--model sspp | --pred PRED.nii.gz] [--slices Z ...]``
draws one row per axial slice (default: the slice with the most tumour, from the true mask when present,
else from the prediction).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from brats_core.cases import Case, load_case
from brats_core.config import LABEL_NAMES, LABELS, MODALITIES
from brats_core.errors import BratsError
from brats_core.evaluation import check_prediction

#: RGBA colour of each BraTS label in masks and overlays (background transparent).
LABEL_COLOURS: dict[int, tuple[float, float, float, float]] = {
    0: (0.0, 0.0, 0.0, 0.0),
    1: (0.90, 0.10, 0.10, 1.0),  # NCR/NET: red
    2: (0.10, 0.75, 0.20, 1.0),  # ED: green
    4: (1.00, 0.85, 0.00, 1.0),  # ET: yellow
}
_COLOUR_TABLE = np.zeros((max(LABELS) + 1, 4))
for _label, _colour in LABEL_COLOURS.items():
    _COLOUR_TABLE[_label] = _colour
_MASK_CMAP = ListedColormap(_COLOUR_TABLE)
OVERLAY_ALPHA = 0.45


def largest_tumour_slice(labels: np.ndarray) -> int | None:
    """Axial index (last axis) with the most tumour voxels, or None when there is no tumour."""
    counts = np.count_nonzero(np.asarray(labels), axis=(0, 1))
    return int(counts.argmax()) if counts.any() else None


def default_slices(case: Case, pred: np.ndarray) -> list[int]:
    """The largest tumour slice of the true mask, else of the prediction, else the middle of the brain."""
    for labels in (case.seg, pred):
        if labels is not None and (index := largest_tumour_slice(labels)) is not None:
            return [index]
    brain = np.flatnonzero(np.any(case.images != 0, axis=(0, 1, 2)))
    return [int(brain[len(brain) // 2])] if brain.size else [case.shape[2] // 2]


def _display(plane: np.ndarray) -> np.ndarray:
    """An (X, Y) plane as an image: rows = Y (anterior up in RAS/LPS BraTS volumes), columns = X."""
    return np.asarray(plane).T


def _window(image: np.ndarray) -> tuple[float, float]:
    """Display range of a modality: its 1st and 99th percentiles inside the brain."""
    values = image[image != 0]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, (1, 99))
    return float(low), float(max(high, low + 1e-6))


def render(case: Case, pred: np.ndarray, out: Path | str, slices: Sequence[int] | None = None, title: str = "") -> Path:
    """Write the figure of ``case`` and its predicted labels ``pred`` (X, Y, Z) to the PNG ``out``."""
    pred = check_prediction(np.asarray(pred), case.shape, f"prediction for case '{case.case_id}'")
    slices = list(slices) if slices else default_slices(case, pred)
    bad = [z for z in slices if not 0 <= z < case.shape[2]]
    if bad:
        raise BratsError(f"case '{case.case_id}': slices {bad} outside 0..{case.shape[2] - 1}")
    columns = [*MODALITIES, *(["true mask"] if case.seg is not None else []), "predicted mask", "overlay"]
    windows = [_window(image) for image in case.images]
    flair = MODALITIES.index("flair")

    fig = Figure(figsize=(2.2 * len(columns), 2.3 * len(slices) + 0.7), dpi=100)
    axes = fig.subplots(len(slices), len(columns), squeeze=False)
    for row, z in enumerate(slices):
        panels = [(case.images[c][..., z], None) for c in range(len(MODALITIES))]
        if case.seg is not None:
            panels.append((None, case.seg[..., z]))
        panels += [(None, pred[..., z]), (case.images[flair][..., z], pred[..., z])]
        for col, (image, mask) in enumerate(panels):
            ax = axes[row, col]
            ax.set_axis_off()
            if image is not None:
                low, high = windows[col if col < len(MODALITIES) else flair]
                ax.imshow(_display(image), cmap="gray", vmin=low, vmax=high, origin="lower")
            else:
                ax.imshow(np.zeros(_display(mask).shape), cmap="gray", vmin=0, vmax=1, origin="lower")
            if mask is not None:
                alpha = OVERLAY_ALPHA if image is not None else 1.0
                ax.imshow(
                    _display(mask), cmap=_MASK_CMAP, vmin=0, vmax=max(LABELS), alpha=alpha,
                    origin="lower", interpolation="nearest",
                )
            ax.set_title(columns[col] if row == 0 else "", fontsize=9)
        axes[row, 0].text(-0.08, 0.5, f"z = {z}", transform=axes[row, 0].transAxes, rotation=90,
                          va="center", ha="right", fontsize=9)
    handles = [Patch(color=LABEL_COLOURS[label], label=f"{label}: {LABEL_NAMES[label]}") for label in LABELS[1:]]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(title or case.case_id, fontsize=11)
    fig.subplots_adjust(left=0.03, right=0.99, top=1 - 0.45 / fig.get_figheight(), bottom=0.5 / fig.get_figheight(),
                        wspace=0.04, hspace=0.08)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def load_prediction(path: Path, case: Case) -> np.ndarray:
    """A saved label map (uint8 NIfTI of the case's shape)."""
    try:
        labels = np.asarray(nib.load(path).dataobj)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise BratsError(f"{path}: cannot read the prediction ({exc})") from exc
    if np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0 and labels.max() <= 255:
        labels = labels.astype(np.uint8)  # label maps saved as int16/int32 by other tools
    return check_prediction(labels, case.shape, str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m Deep_Learning_Model.visualize", description=__doc__.splitlines()[0])
    parser.add_argument("case", type=Path, help="case folder or .zip holding one case")
    parser.add_argument("--out", required=True, type=Path, help="output PNG")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default="sspp", help="registered model to predict with (default: sspp)")
    source.add_argument("--pred", type=Path, help="a saved prediction (NIfTI) instead of running a model")
    parser.add_argument("--checkpoint", type=Path, help="model artifact (default: the shipped one)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: the model's choice")
    parser.add_argument("--slices", type=int, nargs="+", help="axial slice indices (default: largest tumour slice)")
    args = parser.parse_args(argv)

    case = load_case(args.case)
    if args.pred is not None:
        pred, title = load_prediction(args.pred, case), f"{case.case_id}: {args.pred.name}"
    else:
        from brats_core.segmenters import load_segmenter

        pred, title = load_segmenter(args.model, args.checkpoint, args.device).predict(case), f"{case.case_id}: {args.model}"
    print(render(case, pred, args.out, args.slices, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""PNG figure of a case: the four modalities, the true mask (when present), the predicted mask and an overlay.

``python -m Deep_Learning_Model.visualize CASE --out case.png [--model sspp | --pred PRED.nii.gz] [--slices Z ...]``
draws one row per axial slice (default: the slice with the most tumour, from the true mask when present,
else from the prediction).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from brats_core.cases import Case, load_case
from brats_core.config import LABELS, MODALITIES
from brats_core.errors import BratsError
from brats_core.evaluation import check_prediction
from brats_core.figures import (
    MODALITY_NAMES,
    intensity_window,
    labels_rgb,
    largest_tumour_slice,
    legend_handles,
    overlay,
    save_png,
    show_plane,
    to_grey,
)
from brats_core.nifti import check_labels, check_same_geometry, read_nifti
from brats_core.preprocessing import brain_mask


def default_slices(case: Case, pred: np.ndarray) -> list[int]:
    """The largest tumour slice of the true mask, else of the prediction, else the middle of the brain."""
    for labels in (case.seg, pred):
        if labels is not None and np.any(labels):
            return [largest_tumour_slice(labels)]
    brain = np.flatnonzero(brain_mask(case.images).any(axis=(0, 1)))
    return [int(brain[len(brain) // 2])] if brain.size else [case.shape[2] // 2]


def render(case: Case, pred: np.ndarray, out: Path | str, slices: Sequence[int] | None = None, title: str = "") -> Path:
    """Write the figure of ``case`` and its predicted labels ``pred`` (X, Y, Z) to the PNG ``out``.

    Grey windows, label colours and the overlay are those of :mod:`brats_core.figures`.
    """
    pred = check_prediction(np.asarray(pred), case.shape, f"prediction for case '{case.case_id}'")
    slices = list(slices) if slices else default_slices(case, pred)
    bad = [z for z in slices if not 0 <= z < case.shape[2]]
    if bad:
        raise BratsError(f"case '{case.case_id}': slices {bad} outside 0..{case.shape[2] - 1}")
    truth = case.seg is not None
    columns = [*MODALITY_NAMES.values(), *(["true mask"] if truth else []), "predicted mask", "overlay"]
    windows = [intensity_window(image) for image in case.images]
    flair = MODALITIES.index("flair")

    fig = Figure(figsize=(2.2 * len(columns), 2.3 * len(slices) + 0.7), dpi=100)
    axes = fig.subplots(len(slices), len(columns), squeeze=False)
    for row, z in enumerate(slices):
        greys = [to_grey(image[..., z], window) for image, window in zip(case.images, windows, strict=True)]
        masks = [labels_rgb(case.seg[..., z])] if truth else []
        panels = [*greys, *masks, labels_rgb(pred[..., z]), overlay(greys[flair], pred[..., z])]
        for col, picture in enumerate(panels):
            ax = axes[row, col]
            ax.set_axis_off()
            show_plane(ax, picture)
            ax.set_title(columns[col] if row == 0 else "", fontsize=9)
        axes[row, 0].text(-0.08, 0.5, f"z = {z}", transform=axes[row, 0].transAxes, rotation=90,
                          va="center", ha="right", fontsize=9)
    fig.legend(handles=legend_handles(), loc="lower center", ncol=len(LABELS) - 1, fontsize=9, frameon=False)
    fig.suptitle(title or case.case_id, fontsize=11)
    fig.subplots_adjust(left=0.03, right=0.99, top=1 - 0.45 / fig.get_figheight(), bottom=0.5 / fig.get_figheight(),
                        wspace=0.04, hspace=0.08)
    return save_png(fig, out)


def load_prediction(path: Path, case: Case) -> np.ndarray:
    """A saved label map (labels 0/1/2/4, or 0/1/2/3 for a BraTS 2023+ case, any integer dtype) with the case's shape
    and affine, as uint8 0/1/2/4."""
    labels, affine, _ = read_nifti(path)
    check_same_geometry(str(path), labels.shape, affine, f"case '{case.case_id}'", case.shape, case.affine)
    return check_labels(labels, str(path), case.files.brats2023)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m Deep_Learning_Model.visualize", description=__doc__.splitlines()[0])
    parser.add_argument("case", type=Path, help="case folder or .zip holding one case")
    parser.add_argument("--out", required=True, type=Path, help="output PNG")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default="sspp", help="registered model to predict with (default: sspp)")
    source.add_argument("--pred", type=Path, help="a saved prediction (NIfTI) instead of running a model")
    parser.add_argument("--checkpoint", type=Path, help="model checkpoint (default: the shipped one)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: the model's choice")
    parser.add_argument("--slices", type=int, nargs="+", help="axial slice indices (default: largest tumour slice)")
    args = parser.parse_args(argv)

    case = load_case(args.case)
    if args.pred is not None:
        pred, title = load_prediction(args.pred, case), f"{case.case_id}: {args.pred.name}"
    else:
        from brats_app.registry import (
            load_segmenter,  # the command's entry point reads the one model registry
        )

        pred, title = load_segmenter(args.model, args.checkpoint, args.device).predict(case), f"{case.case_id}: {args.model}"
    print(render(case, pred, args.out, args.slices, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The results of one case on the page: volumes and metrics of one model or of several side by side, the
download buttons, and the slice viewer (modalities, true mask, each model's prediction and overlay)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from brats_core.config import HD95_ONE_EMPTY, MODALITIES
from brats_core.figures import MODALITY_NAMES, labels_rgb, largest_tumour_slice, overlay, to_grey
from streamlit_app import viewer

#: Channel of the modality under the overlay.
FLAIR = MODALITIES.index("flair")
#: Choices of the viewer's size control: images per row (1 uses the page width).
PER_ROW: tuple[int, ...] = (1, 2, 3, 4)
REGION_HELP = "WT: whole tumour (labels 1, 2, 4); TC: tumour core (1, 4); ET: enhancing tumour (4)."


@dataclass
class CaseView:
    """One locally loaded case, reoriented for display (RAS+), with a display window per modality."""

    case_id: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    images: np.ndarray
    seg: np.ndarray | None
    windows: list[tuple[float, float]]


@dataclass
class Prediction:
    """The API's answer for one case, its segmentation file and (when the case is loaded) its RAS+ labels."""

    result: dict
    segmentation: bytes
    labels: np.ndarray | None


def _table(values: dict[str, dict[str, str]], index: str = "region") -> pd.DataFrame:
    return pd.DataFrame(values).rename_axis(index)


def _download(prediction: Prediction, case_id: str, model: str, label: str) -> None:
    data = prediction.segmentation
    st.download_button(
        label, data=lambda: data, file_name=f"{case_id}_{model}_pred_seg.nii.gz", mime="application/gzip",
        on_click="ignore", key=f"segmentation_download:{model}",
    )  # fmt: skip


def _timing(model_name: str, result: dict) -> str:
    flips = " with test-time flips" if result.get("tta") else ""
    return (
        f"{model_name}{flips} on {result['device']}: {result['runtime_seconds']:.1f} s of inference, "
        f"{result['total_seconds']:.1f} s in all."
    )


def _empty_mask_note(results: list[dict]) -> str:
    """A sentence for an HD95 of :data:`HD95_ONE_EMPTY`, which is a convention, not a measured distance."""
    if any(m["hd95_mm"] == HD95_ONE_EMPTY for r in results for m in (r.get("metrics") or {}).values()):
        return (f" An HD95 of {HD95_ONE_EMPTY} mm means that one of the two masks of that region is empty (the BraTS "
                "convention), not a measured distance.")
    return ""


def show_results(predictions: dict[str, Prediction], case_id: str, names: dict[str, str]) -> None:
    """Volumes and metrics: one model's two tables, or for several models one column per model in each table
    (volumes, Dice, HD95) so they read side by side; ``names`` gives each model's display name."""
    st.subheader("Results" if len(predictions) == 1 else "Results, model by model")
    if len(predictions) == 1:
        [(model, prediction)] = predictions.items()
        result, metrics = prediction.result, prediction.result.get("metrics")
        left, right = st.columns(2)
        with left:
            st.markdown("**Predicted volumes**")
            volumes = {r: f"{v:.1f}" for r, v in (result.get("volumes_ml") or {}).items()}
            st.table(_table({"volume (mL)": volumes}))
        with right:
            if metrics:
                st.markdown("**Agreement with the true mask**")
                dice = {r: f"{m['dice']:.3f}" for r, m in metrics.items()}
                hd95 = {r: f"{m['hd95_mm']:.2f}" for r, m in metrics.items()}
                st.table(_table({"Dice": dice, "HD95 (mm)": hd95}))
            else:
                st.info("No true mask was uploaded with this case, so Dice and HD95 are not available.")
        st.caption(f"{_timing(names[model], result)} {REGION_HELP}{_empty_mask_note([result])}")
        _download(prediction, case_id, model, "Download the predicted segmentation (.nii.gz)")
        return
    results = {names[m]: p.result for m, p in predictions.items()}
    columns = st.columns(3)
    with columns[0]:
        st.markdown("**Predicted volumes (mL)**")
        st.table(_table({n: {k: f"{v:.1f}" for k, v in r["volumes_ml"].items()} for n, r in results.items()}))
    if all(r.get("metrics") for r in results.values()):
        for column, key, title, digits in ((columns[1], "dice", "Dice", 3), (columns[2], "hd95_mm", "HD95 (mm)", 2)):
            with column:
                st.markdown(f"**{title} against the true mask**")
                values = {n: {k: f"{m[key]:.{digits}f}" for k, m in r["metrics"].items()} for n, r in results.items()}
                st.table(_table(values))
    else:
        with columns[1]:
            st.info("No true mask was uploaded with this case, so Dice and HD95 are not available.")
    st.caption(" ".join(_timing(n, r) for n, r in results.items()) + f" {REGION_HELP}"
               + _empty_mask_note(list(results.values())))
    for column, (model, prediction) in zip(st.columns(len(predictions)), predictions.items(), strict=True):
        with column:
            _download(prediction, case_id, model, f"Download the {names[model]} segmentation (.nii.gz)")


def _grid(items: list[tuple[np.ndarray | None, str]], per_row: int) -> None:
    """Images in rows of ``per_row`` columns; an item without an image is a note in its place."""
    for start in range(0, len(items), per_row):
        for column, (data, caption) in zip(st.columns(per_row), items[start : start + per_row], strict=False):
            with column:
                if data is None:
                    st.info(caption)
                else:
                    st.image(data, caption=caption, width="stretch", output_format="PNG")


def show_viewer(view: CaseView, predicted: dict[str, np.ndarray], names: dict[str, str], slider_key: str) -> None:
    """The slice viewer: a plane, a slice, a size control and the binary switch; the four modalities, then the
    true mask, each model's predicted mask and each model's overlay on the FLAIR, and the legend."""
    st.subheader("Viewer")
    controls = st.columns([2, 3, 1, 2])
    with controls[0]:
        plane = st.radio("Plane", list(viewer.PLANES), horizontal=True, key="plane")
    with controls[2]:
        per_row = st.selectbox(
            "Images per row", PER_ROW, index=len(PER_ROW) - 1, key="per_row",
            help="Fewer images per row show them larger; 1 uses the page width.",
        )  # fmt: skip
    with controls[3]:
        binary = st.toggle("Whole tumour only (binary)", key="binary")
    reference = next(iter(predicted.values()), view.seg)
    axis = viewer.PLANES[plane]
    count = view.images.shape[1 + axis]
    start = largest_tumour_slice(reference, axis) if reference is not None else count // 2
    with controls[1]:
        index = st.slider(
            "Slice", 0, count - 1, value=start, key=f"slice:{slider_key}:{plane}",
            help="Starts at the slice with the most tumour: predicted once a prediction is shown, else the true mask.",
        )  # fmt: skip

    def cut(volume: np.ndarray) -> np.ndarray:
        return viewer.extract_slice(volume, plane, index)

    greys = [to_grey(cut(channel), window) for channel, window in zip(view.images, view.windows, strict=True)]
    colours = viewer.label_colours(binary)
    st.markdown(viewer.legend_html(binary), unsafe_allow_html=True)
    items: list[tuple[np.ndarray | None, str]] = list(zip(greys, MODALITY_NAMES.values(), strict=True))
    if view.seg is not None:
        items.append((labels_rgb(cut(view.seg), colours), "True mask"))
    else:
        items.append((None, "No true mask in this upload."))
    single = len(predicted) == 1
    for model, labels in predicted.items():
        items.append((labels_rgb(cut(labels), colours), "Predicted mask" if single else f"Predicted: {names[model]}"))
    for model, labels in predicted.items():
        caption = "Overlay: prediction on FLAIR" if single else f"Overlay: {names[model]} on FLAIR"
        items.append((overlay(greys[FLAIR], cut(labels), colours=colours), caption))
    if not predicted:
        items.append((None, "Run the segmentation to see the predicted mask."))
        if view.seg is not None:
            items.append((overlay(greys[FLAIR], cut(view.seg), colours=colours), "Overlay: true mask on FLAIR"))
    _grid(items, per_row)

"""Streamlit UI of the BraTS segmentation API: ``streamlit run streamlit_app/app.py``.

Choose a case (a .zip or its NIfTI files, or the bundled sample), run the segmentation on the API, look at
the slices and read the volumes and metrics. The chosen files are read locally for display and uploaded once
per selection; only the predicted segmentation comes back. Every failure is shown as a message.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:  # `streamlit run` puts only streamlit_app/ on the path, not the repository
    sys.path.insert(0, REPO)

import numpy as np
import pandas as pd
import streamlit as st

from brats_core.config import MODALITIES
from brats_core.errors import BratsError
from brats_core.figures import MODALITY_NAMES, labels_rgb, largest_tumour_slice, overlay, to_grey
from streamlit_app import viewer
from streamlit_app.api_client import ApiClient, ApiError, default_api_url
from streamlit_app.selection import LocalSelection, read_segmentation, selection_digest

LOG = logging.getLogger("streamlit_app")
#: Seconds a health answer is reused before the API is asked again.
HEALTH_TTL_S = 30.0
SAMPLE_NAME = "sample_case.zip"
#: Channel of the modality under the overlay.
FLAIR = MODALITIES.index("flair")
state = st.session_state


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


# ------------------------------------------------------------------------------------------------ helpers
def api_identity() -> tuple[str, str]:
    return state.api_url.strip().rstrip("/"), state.api_key


def api_client() -> ApiClient:
    url, key = api_identity()
    return ApiClient(url, key or None)


@st.cache_resource(show_spinner=False, max_entries=4, ttl=3600)
def fetch_sample(api_url: str, api_key: str) -> bytes:
    """The sample zip of the API at ``api_url``, downloaded once per URL and key (failures are not cached).

    A resource cache: the immutable bytes are shared as they are, not pickled and copied on every hit.
    """
    return ApiClient(api_url, api_key or None).download_sample()


def _forget_health() -> None:
    state.pop("health", None)


def check_health() -> tuple[dict | None, str | None]:
    """(health answer, None) or (None, error message), reused for :data:`HEALTH_TTL_S` seconds."""
    cache = state.setdefault("health", {})
    key = api_identity()
    entry = cache.get(key)
    if entry is None or time.monotonic() - entry[0] > HEALTH_TTL_S:
        try:
            entry = (time.monotonic(), api_client().health(), None)
        except ApiError as exc:
            entry = (time.monotonic(), None, str(exc))
        cache[key] = entry
    return entry[1], entry[2]


def _megabytes(files: list[tuple[str, bytes]]) -> str:
    return f"{sum(len(data) for _, data in files) / 1024**2:.1f} MB"


# ------------------------------------------------------------------------------------------------ sidebar
def sidebar() -> None:
    with st.sidebar:
        st.header("API")
        st.text_input("API URL", value=default_api_url(), key="api_url")
        st.text_input(
            "API key",
            value=os.environ.get("BRATS_API_KEY", ""),
            type="password",
            key="api_key",
            help="Sent as the X-API-Key header; leave empty when the API needs none.",
        )
        health, error = check_health()
        if health is not None:
            st.success(
                f"API reachable: model **{health.get('model', '?')}** on **{health.get('device', '?')}**"
            )
            st.caption(
                f"Checkpoint `{Path(str(health.get('checkpoint', '?'))).name}`, "
                f"version {health.get('version', '?')}, status {health.get('status', '?')}"
            )
            models = list(health.get("models") or [])
            if len(models) > 1:
                default = models.index(health["model"]) if health.get("model") in models else 0
                st.selectbox("Model", models, index=default, key="model")
        else:
            st.error(f"API not available. {error}")
        st.button("Check the API again", key="recheck", on_click=_forget_health)


# ------------------------------------------------------------------------------------------ choosing files
def _on_upload_change() -> None:
    state.source = "upload"


def _take_sample() -> None:
    state.source = "sample"
    state.sample_error = None
    url, key = api_identity()
    try:
        state.sample = (url, fetch_sample(url, key))
    except ApiError as exc:
        state.sample = None
        state.sample_error = f"Could not fetch the sample: {exc}"


def choose_files() -> tuple[list[tuple[str, bytes]], str] | None:
    """The current selection as ((name, bytes) list, digest), or None; digests are computed once per file."""
    left, right = st.columns([3, 1])
    with left:
        uploaded = st.file_uploader(
            "Upload a .zip of a case, or its four or five NIfTI files (.nii / .nii.gz)",
            type=["zip", "nii", "gz"],
            accept_multiple_files=True,
            key="uploader",
            on_change=_on_upload_change,
        )
    with right:
        st.write("No data at hand?")
        st.button("Try the sample", on_click=_take_sample, key="take_sample", type="secondary")
        if state.get("source") == "sample" and state.get("sample"):
            sample = state.sample[1]
            st.download_button(
                "Download the sample zip",
                data=lambda: sample,
                file_name=SAMPLE_NAME,
                mime="application/zip",
                on_click="ignore",
                key="sample_download",
            )
    if state.get("source") == "sample":
        if state.get("sample_error"):
            st.error(state.sample_error)
            return None
        if not state.get("sample"):
            return None
        files = [(SAMPLE_NAME, state.sample[1])]
        digests = state.setdefault("digests", {})
        key = ("sample", state.sample[0])
        if key not in digests:
            digests[key] = selection_digest(files)
        return files, digests[key]
    if not uploaded:
        return None
    files = [(f.name, f.getvalue()) for f in uploaded]
    digests = state.setdefault("digests", {})
    key = tuple(f.file_id for f in uploaded)
    if key not in digests:
        digests[key] = selection_digest(files)
    return files, digests[key]


def open_local(files: list[tuple[str, bytes]], digest: str) -> LocalSelection | None:
    """The local copy of the selection, opened once per digest (the previous one is removed)."""
    current = state.get("local")
    if state.get("local_digest") == digest:
        if state.get("local_error"):
            st.error(f"Cannot read these files: {state.local_error}")
        return current
    if current is not None:
        current.close()
    state.local, state.local_error, state.local_digest, state.view = None, None, digest, None
    try:
        with st.spinner("Reading the files…"):
            state.local = LocalSelection.open(files)
    except BratsError as exc:
        state.local_error = str(exc)
        st.error(f"Cannot read these files: {exc}")
    return state.local


def _forget_upload(key: tuple[str, str, str]) -> None:
    state.uploads.pop(key, None)


def upload(files: list[tuple[str, bytes]], digest: str, retry: bool = False) -> dict | None:
    """The API's answer to the upload of this selection; uploads only once per selection, URL and key."""
    uploads = state.setdefault("uploads", {})
    key = (*api_identity(), digest)
    if retry:
        _forget_upload(key)
    if key not in uploads:
        try:
            with st.spinner(f"Uploading {_megabytes(files)} to the API…"):
                uploads[key] = {"response": api_client().upload(files)}
        except ApiError as exc:
            uploads[key] = {"error": str(exc), "status": exc.status}
    return uploads[key].get("response")


def show_upload(files: list[tuple[str, bytes]], digest: str) -> dict | None:
    answer = upload(files, digest)
    if answer is None:
        key = (*api_identity(), digest)
        entry = state.uploads[key]
        status = entry["status"]
        if status is not None and 400 <= status < 500 and status not in (401, 403):
            st.error(f"The API rejected these files: {entry['error']}")
        else:
            st.error(f"Upload failed: {entry['error']}")
            st.button("Retry the upload", key="retry_upload", on_click=_forget_upload, args=(key,))
        return None
    rows = [
        {
            "case": case.get("case_id"),
            "modalities": ", ".join(case.get("modalities", [])),
            "shape": " x ".join(str(s) for s in case.get("shape", [])),
            "spacing (mm)": " x ".join(f"{s:g}" for s in case.get("spacing_mm", [])),
            "true mask": "yes" if case.get("has_segmentation") else "no",
        }
        for case in answer.get("cases", [])
    ]
    st.success(f"Uploaded {', '.join(name for name, _ in files)}: {len(rows)} case(s) found.")
    if rows:
        st.table(pd.DataFrame(rows).set_index("case"))
    return answer


# ---------------------------------------------------------------------------------------------- one case
def load_view(local: LocalSelection, local_id: str) -> CaseView | None:
    """The displayed case, loaded from the local files once (only one is kept in memory)."""
    view = state.get("view")
    if view is not None and view.case_id == local_id:
        return view
    state.view = None
    try:
        with st.spinner(f"Loading {local_id}…"):
            case = local.load(local_id)
    except BratsError as exc:
        st.error(f"Cannot display this case: {exc}")
        return None
    images = viewer.to_ras(case.images, case.affine)
    state.view = CaseView(
        case_id=local_id,
        shape=case.shape,
        affine=case.affine,
        images=images,
        seg=None if case.seg is None else viewer.to_ras(case.seg, case.affine),
        windows=[viewer.volume_window(channel) for channel in images],
    )
    return state.view


def _upload_exists(api: ApiClient, upload_id: str) -> bool:
    try:
        api.upload_info(upload_id)
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def predict(
    upload_id: str, case_id: str, model: str | None, digest: str, files: list[tuple[str, bytes]]
) -> tuple[Prediction | None, str | None]:
    """Run the prediction and fetch its segmentation: (prediction, None) or (None, error message).

    If the server no longer knows the upload (it expired), the files are uploaded again, once.
    """
    api = api_client()
    try:
        with st.spinner(f"Segmenting {case_id} on the API…"):
            try:
                result = api.predict(upload_id, case_id, model)
            except ApiError as exc:
                if exc.status != 404 or _upload_exists(api, upload_id):
                    raise
                answer = upload(files, digest, retry=True)
                if answer is None:
                    raise
                result = api.predict(answer["upload_id"], case_id, model)
            segmentation = api.segmentation(result["prediction_id"])
    except ApiError as exc:
        return None, f"Prediction failed: {exc}"
    return Prediction(result, segmentation, None), None


def prediction_labels(prediction: Prediction, view: CaseView | None) -> np.ndarray | None:
    """The prediction's labels in the view's RAS+ layout, decoded once."""
    if view is None:
        return None
    if prediction.labels is None or prediction.labels.shape != view.images.shape[1:]:
        try:
            labels = read_segmentation(prediction.segmentation, view.shape)
        except BratsError as exc:
            st.error(str(exc))
            return None
        prediction.labels = viewer.to_ras(labels, view.affine)
    return prediction.labels


def show_results(prediction: Prediction, case_id: str) -> None:
    result = prediction.result
    st.subheader("Results")
    volumes = result.get("volumes_ml") or {}
    metrics = result.get("metrics")
    left, right = st.columns(2)
    with left:
        st.markdown("**Predicted volumes**")
        st.table(
            pd.DataFrame({"volume (mL)": {r: f"{v:.1f}" for r, v in volumes.items()}}).rename_axis("region")
        )
    with right:
        if metrics:
            st.markdown("**Agreement with the true mask**")
            table = {
                region: {"Dice": f"{m['dice']:.3f}", "HD95 (mm)": f"{m['hd95_mm']:.2f}"}
                for region, m in metrics.items()
            }
            st.table(pd.DataFrame.from_dict(table, orient="index").rename_axis("region"))
        else:
            st.info("No true mask was uploaded with this case, so Dice and HD95 are not available.")
    st.caption(
        f"Model {result['model']} on {result['device']}: {result['runtime_seconds']:.1f} s of inference, "
        f"{result['total_seconds']:.1f} s in all. WT: whole tumour (labels 1, 2, 4); TC: tumour core (1, 4); "
        "ET: enhancing tumour (4)."
    )
    data = prediction.segmentation
    st.download_button(
        "Download the predicted segmentation (.nii.gz)",
        data=lambda: data,
        file_name=f"{case_id}_pred_seg.nii.gz",
        mime="application/gzip",
        on_click="ignore",
        key="segmentation_download",
    )


def show_viewer(view: CaseView, predicted: np.ndarray | None, slider_key: str) -> None:
    st.subheader("Viewer")
    controls = st.columns([2, 3, 2])
    with controls[0]:
        plane = st.radio("Plane", list(viewer.PLANES), horizontal=True, key="plane")
    with controls[2]:
        binary = st.toggle("Whole tumour only (binary)", key="binary")
    reference = predicted if predicted is not None else view.seg
    axis = viewer.PLANES[plane]
    count = view.images.shape[1 + axis]
    start = largest_tumour_slice(reference, axis) if reference is not None else count // 2
    with controls[1]:
        index = st.slider(
            "Slice",
            0,
            count - 1,
            value=start,
            key=f"slice:{slider_key}:{plane}",
            help="Starts at the slice with the largest predicted tumour.",
        )

    def image(data: np.ndarray, caption: str) -> None:
        st.image(data, caption=caption, width="stretch", output_format="PNG")

    def cut(volume: np.ndarray) -> np.ndarray:
        return viewer.extract_slice(volume, plane, index)

    greys = [to_grey(cut(channel), window) for channel, window in zip(view.images, view.windows, strict=True)]
    colours = viewer.label_colours(binary)
    for column, grey, name in zip(st.columns(4), greys, MODALITY_NAMES.values(), strict=True):
        with column:
            image(grey, name)
    columns = st.columns(4)
    with columns[0]:
        if view.seg is not None:
            image(labels_rgb(cut(view.seg), colours), "True mask")
        else:
            st.info("No true mask in this upload.")
    with columns[1]:
        if predicted is not None:
            image(labels_rgb(cut(predicted), colours), "Predicted mask")
        else:
            st.info("Run the segmentation to see the predicted mask.")
    with columns[2]:
        if reference is not None:
            what = "prediction" if predicted is not None else "true mask"
            image(overlay(greys[FLAIR], cut(reference), colours=colours), f"Overlay: {what} on FLAIR")
    with columns[3]:
        st.markdown(viewer.legend_html(binary), unsafe_allow_html=True)


# ------------------------------------------------------------------------------------------------- page
def main() -> None:
    st.set_page_config(page_title="BraTS tumour segmentation", page_icon="🧠", layout="wide")
    st.title("Brain tumour segmentation (BraTS)")
    st.caption(
        "Segments necrotic/non-enhancing core (NCR/NET), edema (ED) and enhancing tumour (ET) from the four "
        "MRI modalities T1, T1ce, T2 and FLAIR. Research use only, not for diagnosis."
    )
    sidebar()
    chosen = choose_files()
    if chosen is None:
        if state.get("local") is not None:  # the user removed the files: drop the local copy
            state.local.close()
        state.local, state.local_digest, state.view = None, None, None
        st.info("Upload a case or try the sample to start.")
        return
    files, digest = chosen
    local = open_local(files, digest)
    answer = show_upload(files, digest)

    server_cases = [case["case_id"] for case in (answer or {}).get("cases", [])]
    local_ids = list(local.cases) if local is not None else []
    case_ids = server_cases or local_ids
    if not case_ids:
        return
    case_id = st.selectbox("Case", case_ids, key=f"case:{digest}") if len(case_ids) > 1 else case_ids[0]
    local_id = case_id if case_id in local_ids else None  # both sides unpack alike: the same case ids
    view = load_view(local, local_id) if local is not None and local_id is not None else None

    model = state.get("model")
    key = (*api_identity(), digest, case_id, model)
    predictions, errors = state.setdefault("predictions", {}), state.setdefault("predict_errors", {})
    if answer is not None and st.button("Run the segmentation", type="primary", key="run"):
        prediction, errors[key] = predict(answer["upload_id"], case_id, model, digest, files)
        if prediction is not None:
            predictions[key] = prediction
    if errors.get(key):
        st.error(errors[key])
    prediction = predictions.get(key)
    predicted = prediction_labels(prediction, view) if prediction is not None else None
    if prediction is not None:
        show_results(prediction, case_id)
    if view is not None:
        slider_key = f"{digest}:{case_id}:{prediction.result.get('prediction_id') if prediction else 'none'}"
        show_viewer(view, predicted, slider_key)


try:
    main()
except Exception as exc:  # the UI shows a message, never a traceback; the log keeps the details
    LOG.exception("unexpected error in the UI")
    st.error(f"Unexpected error ({type(exc).__name__}): {exc}")

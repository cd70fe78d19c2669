"""Streamlit UI of the BraTS segmentation API: ``streamlit run streamlit_app/app.py``.

Choose a case (a .zip or its NIfTI files, or the bundled sample), run the segmentation on the API, look at
the slices and read the volumes and metrics. The chosen files are read locally for display and uploaded once
per selection; only the predicted segmentation comes back. Every failure is shown as a message.
"""

from __future__ import annotations

import logging
import sys
import time
from functools import partial
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:  # `streamlit run` puts only streamlit_app/ on the path, not the repository
    sys.path.insert(0, REPO)

import numpy as np
import pandas as pd
import streamlit as st

from brats_core.errors import BratsError
from streamlit_app import viewer
from streamlit_app.api_client import ApiClient, ApiError
from streamlit_app.connection import (
    api_client,
    api_identity,
    chosen_models,
    display_name,
    fetch_sample,
    model_name,
    sidebar,
)
from streamlit_app.progress import Progress
from streamlit_app.results import CaseView, Prediction, show_results, show_viewer
from streamlit_app.selection import LocalSelection, read_segmentation, selection_digest

LOG = logging.getLogger("streamlit_app")
SAMPLE_NAME = "sample_case.zip"
#: Shown with the sample: the shipped models were trained on all 27 development cases, the sample among them.
SAMPLE_NOTE = ("The sample is one of the 27 cases the shipped models were trained on, so its Dice here is a "
               "training score, not what to expect on a new patient: for that, see the 5-fold cross-validation "
               "in the README.")
state = st.session_state


def _megabytes(files: list[tuple[str, bytes]]) -> str:
    return f"{sum(len(data) for _, data in files) / 1024**2:.1f} MB"


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
        st.caption(SAMPLE_NOTE)
        return _with_digest(("sample", state.sample[0]), [(SAMPLE_NAME, state.sample[1])])
    if not uploaded:
        return None
    return _with_digest(tuple(f.file_id for f in uploaded), [(f.name, f.getvalue()) for f in uploaded])


def _with_digest(key: tuple, files: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], str]:
    """``(files, their digest)``, the digest computed once per ``key`` (the sample's URL, the uploader's ids)."""
    digests = state.setdefault("digests", {})
    if key not in digests:
        digests[key] = selection_digest(files)
    return files, digests[key]


def open_local(files: list[tuple[str, bytes]], digest: str) -> LocalSelection | None:
    """The local copy of the selection, opened once per digest (the previous one is removed).

    Its error (shown when the API could not check the files) names the user's files, never the temporary folder.
    """
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


def upload(files: list[tuple[str, bytes]], digest: str) -> tuple[tuple, dict]:
    """(key, entry): the API's answer to the upload of this selection (``response``, or ``error`` and
    ``status``), under its key in ``state.uploads``; uploads only once per selection, URL and key."""
    uploads = state.setdefault("uploads", {})
    key = (*api_identity(), digest)
    if key not in uploads:
        try:
            with st.spinner(f"Uploading {_megabytes(files)} to the API…"):
                uploads[key] = {"response": api_client().upload(files)}
        except ApiError as exc:
            uploads[key] = {"error": str(exc), "status": exc.status}
    return key, uploads[key]


def show_upload(files: list[tuple[str, bytes]], digest: str) -> tuple[dict | None, bool]:
    """(the API's answer, False), or (None, whether the API rejected the files themselves)."""
    key, entry = upload(files, digest)
    answer = entry.get("response")
    if answer is None:
        status = entry["status"]
        if status is not None and 400 <= status < 500 and status not in (401, 403):
            names = ", ".join(name for name, _ in files)
            st.error(f"Cannot use {names}: {entry['error']}")
            return None, True
        st.error(f"Upload failed: {entry['error']}")
        st.button("Retry the upload", key="retry_upload", on_click=_forget_upload, args=(key,))
        return None, False
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
    return answer, False


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


def _segment(api: ApiClient, upload_id: str, case_id: str, model: str | None, files,
             tta: bool) -> tuple[dict, dict | None]:
    """``POST /predict`` (in a worker thread: no Streamlit call): (result, the new upload or None).

    If the server no longer knows the upload (it expired), the files are uploaded again, once.
    """
    try:
        return api.predict(upload_id, case_id, model, tta), None
    except ApiError as exc:
        if exc.status != 404 or _upload_exists(api, upload_id):
            raise
    answer = api.upload(files)
    return api.predict(answer["upload_id"], case_id, model, tta), answer


def predict(
    upload_id: str, case_id: str, models: list[str | None], digest: str, files: list[tuple[str, bytes]],
    tta: bool = False,
) -> tuple[dict[str | None, Prediction], dict[str | None, str]]:
    """Segment the case with each model (``tta``: with test-time flips) and fetch each label map, with a
    progress bar: (predictions, errors) by model. The bar's pace is the time the same model took last time in
    this session, when known."""
    api, durations = api_client(), state.setdefault("durations", {})
    progress = Progress(f"Segmenting {case_id} on the API", steps=2 * len(models))
    predictions: dict[str | None, Prediction] = {}
    errors: dict[str | None, str] = {}
    for model in models:
        name = (model_name(model) if model else "the API's model") + (" with flips" if tta else "")
        timing_key = (api.base_url, model, tta)
        try:
            started = time.monotonic()
            result, renewed = progress.run(
                f"{name}: segmenting on the API…",
                lambda model=model, upload_id=upload_id: _segment(api, upload_id, case_id, model, files, tta),
                durations.get(timing_key),
            )
            durations[timing_key] = time.monotonic() - started
            if renewed is not None:
                state.setdefault("uploads", {})[(*api_identity(), digest)] = {"response": renewed}
                upload_id = renewed["upload_id"]
            segmentation = progress.run(
                f"{name}: downloading the label map…", partial(api.segmentation, result["prediction_id"])
            )
            predictions[model] = Prediction(result, segmentation, None)
        except ApiError as exc:
            errors[model] = f"Prediction failed{f' ({name})' if len(models) > 1 else ''}: {exc}"
            if exc.status is None:  # the API is unreachable: the sidebar's health is checked again next time
                state.pop("health", None)
    if not predictions:
        label = f"Segmentation of {case_id} failed"
    else:
        label = f"Segmented {case_id}" + (f" with {len(predictions)} of {len(models)} models" if len(models) > 1 else "")
    progress.finish(label, ok=not errors)
    return predictions, errors


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
        _drop_local()
        st.info("Upload a case or try the sample to start.")
        return
    files, digest = chosen
    answer, rejected = show_upload(files, digest)
    if rejected:  # the API's message names the files and the problem: one message, nothing else to show
        _drop_local()
        return
    local = open_local(files, digest)

    server_cases = [case["case_id"] for case in (answer or {}).get("cases", [])]
    local_ids = list(local.cases) if local is not None else []
    case_ids = server_cases or local_ids
    if not case_ids:
        return
    case_id = st.selectbox("Case", case_ids, key=f"case:{digest}") if len(case_ids) > 1 else case_ids[0]
    local_id = case_id if case_id in local_ids else None  # both sides unpack alike: the same case ids
    view = load_view(local, local_id) if local is not None and local_id is not None else None

    models, tta = chosen_models(), bool(state.get("tta", False))
    keys = {model: (*api_identity(), digest, case_id, model, tta) for model in models}
    predictions, errors = state.setdefault("predictions", {}), state.setdefault("predict_errors", {})
    if answer is not None and st.button("Run the segmentation", type="primary", key="run"):
        todo = [m for m in models if keys[m] not in predictions] or models  # all again when all are there
        done, failed = predict(answer["upload_id"], case_id, todo, digest, files, tta)
        for model in todo:
            errors[keys[model]] = failed.get(model)
            if model in done:
                predictions[keys[model]] = done[model]
    for model in models:
        if errors.get(keys[model]):
            st.error(errors[keys[model]])
    shown = {p.result["model"]: p for m in models if (p := predictions.get(keys[m])) is not None}
    names = {model: display_name(model) for model in shown}
    predicted = {m: labels for m, p in shown.items() if (labels := prediction_labels(p, view)) is not None}
    if shown:
        show_results(shown, case_id, names)
    if view is not None:
        slider_key = ":".join([digest, case_id, *(p.result.get("prediction_id", "") for p in shown.values())])
        show_viewer(view, predicted, names, slider_key)


def _drop_local() -> None:
    """Forget the local copy of the previous selection (its temporary folder is removed)."""
    if state.get("local") is not None:
        state.local.close()
    state.local, state.local_digest, state.view = None, None, None


try:
    main()
except Exception as exc:  # the UI shows a message, never a traceback; the log keeps the details
    LOG.exception("unexpected error in the UI")
    st.error(f"Unexpected error ({type(exc).__name__}): {exc}")

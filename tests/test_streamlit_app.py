"""The Streamlit UI: viewer maths, local file handling, the API client, and the app's flows through AppTest.

The flows run the real API (``create_app``) on a loopback port with a fake segmenter (it returns the true
mask) and a 48 x 48 x 32 synthetic sample, so that every request really goes over HTTP.
"""

from __future__ import annotations

import gzip
import io
import tempfile
import threading
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
from streamlit.testing.v1 import AppTest
from streamlit_support import serve_api, synthetic_zip
from support import Oracle, case_zip, free_port

from brats_core.config import LABEL_NAMES, REPO_ROOT
from brats_core.errors import BratsError
from brats_core.figures import LABEL_COLOURS, labels_rgb, largest_tumour_slice, overlay
from brats_core.synth import make_synthetic_case, write_case
from sspp_unet_api.app.config import Settings
from streamlit_app import viewer
from streamlit_app.api_client import ApiClient, ApiError, Timeouts, default_api_url
from streamlit_app.selection import LocalSelection, read_segmentation, selection_digest

APP = REPO_ROOT / "streamlit_app" / "app.py"
SHAPE = (48, 48, 32)


# ------------------------------------------------------------------------------------------------- viewer
def test_to_ras_undoes_flipped_and_permuted_axes():
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    ras = volume.transpose(1, 0, 2)[::-1]  # stored as (-y, x, z): axis 0 runs posterior, axis 1 runs right
    affine = np.array([[0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    np.testing.assert_array_equal(viewer.to_ras(ras, affine), volume)
    stacked = viewer.to_ras(np.stack([ras, ras + 1]), affine)
    np.testing.assert_array_equal(stacked, np.stack([volume, volume + 1]))


def test_extract_slice_orientation_and_clipping():
    volume = np.zeros((4, 5, 6))
    volume[3, 4, 2] = 1  # right, anterior, superior corner of slice z=2
    axial = viewer.extract_slice(volume, "axial", 2)
    assert axial.shape == (5, 4)
    assert axial[0, 0] == 1  # anterior at the top, patient's right on the image's left (radiological)
    assert viewer.extract_slice(volume, "coronal", 4).shape == (6, 4)
    assert viewer.extract_slice(volume, "sagittal", 99).shape == (6, 5)  # index clipped to the last slice
    assert viewer.extract_slice(volume, "sagittal", 3)[-1 - 2, 0] == 1  # superior up, anterior left


def test_largest_tumour_slice_per_plane():
    labels = np.zeros((10, 12, 14), dtype=np.uint8)
    labels[2, 3:9, 4:10] = 2
    labels[6, 5, 5] = 4
    assert largest_tumour_slice(labels, viewer.PLANES["sagittal"]) == 2
    assert largest_tumour_slice(labels, viewer.PLANES["coronal"]) == 5


def test_volume_window_of_the_brain_voxels():
    volume = np.zeros((8, 8, 8), dtype=np.float32)
    assert viewer.volume_window(volume) == (0.0, 1.0)
    volume[2:6, 2:6, 2:6] = 7.0
    low, high = viewer.volume_window(volume)
    assert low == 7.0 and high > low


def test_colours_overlay_and_legend_share_one_colour_map():
    labels = np.array([[0, 1], [2, 4]], dtype=np.uint8)
    assert viewer.label_colours() == LABEL_COLOURS
    binary = labels_rgb(labels, viewer.label_colours(binary=True))
    assert binary[0, 0].tolist() == [0, 0, 0]
    assert {tuple(c) for c in binary[labels > 0]} == {viewer.WHOLE_TUMOUR_COLOUR}
    grey = np.full((2, 2), 100, dtype=np.uint8)
    blended = overlay(grey, labels, alpha=0.5, colours=viewer.label_colours(binary=True))
    assert blended[0, 0].tolist() == [100, 100, 100]  # background keeps the grey level
    np.testing.assert_array_equal(blended[1, 1], np.round((100 + np.asarray(viewer.WHOLE_TUMOUR_COLOUR)) / 2))
    assert viewer.legend() == [(LABEL_NAMES[k], LABEL_COLOURS[k]) for k in (1, 2, 4)]
    assert viewer.legend(binary=True) == [(viewer.WHOLE_TUMOUR_NAME, viewer.WHOLE_TUMOUR_COLOUR)]
    assert all(name in viewer.legend_html() for name in ("NCR/NET", "ED", "ET"))


# ------------------------------------------------------------------------------------------ local files
@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    case = make_synthetic_case("synth_local", shape=SHAPE, seed=5)
    files = write_case(case, tmp_path_factory.mktemp("local"))
    named = [(p.name, p.read_bytes()) for p in [*files.images.values(), files.seg]]
    return case, named


def test_selection_digest_ignores_order_and_sees_content():
    a, b = ("a.nii.gz", b"1"), ("b.nii.gz", b"2")
    assert selection_digest([a, b]) == selection_digest([b, a])
    assert selection_digest([a, b]) != selection_digest([a, ("b.nii.gz", b"3")])
    assert selection_digest([("ab", b"")]) != selection_digest([("a", b"b")])


def test_local_selection_from_nifti_files_and_from_zip(case_files, tmp_path):
    case, named = case_files
    selection = LocalSelection.open(named)
    folder = Path(selection._folder.name)
    [case_id] = selection.cases
    loaded = selection.load(case_id)
    np.testing.assert_array_equal(loaded.seg, case.seg)
    selection.close()
    assert not folder.exists()

    zipped = LocalSelection.open([("upload.zip", case_zip([write_case(case, tmp_path)]))])
    assert list(zipped.cases) == ["synth_local"]
    np.testing.assert_allclose(zipped.load("synth_local").images, case.images)
    zipped.close()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([], "no file selected"),
        ([("a.zip", b"PK"), ("x_t1.nii.gz", b"")], "either one .zip or the NIfTI files"),
        ([("broken.zip", b"not a zip")], "not a valid zip"),
        ([("x_t1.nii.gz", b"1"), ("x_t1.nii.gz", b"2")], "file 'x_t1.nii.gz' sent twice"),
        ([("notes.txt", b"1")], "neither a .zip nor a NIfTI file"),
        ([("..", b"1")], "no usable characters"),
    ],
)
def test_local_selection_rejects_bad_input(files, message):
    with pytest.raises(BratsError, match=message):
        LocalSelection.open(files)


def test_local_selection_names_the_missing_modality(case_files):
    _, named = case_files
    with pytest.raises(BratsError, match="missing modality flair"):
        LocalSelection.open([item for item in named if "_flair" not in item[0]])


def test_local_selection_errors_name_the_users_files_not_the_temporary_folder(case_files):
    _, named = case_files
    renamed = [(name.replace("synth_local", "BraTS20_007"), data) for name, data in named if "_t2" not in name]
    with pytest.raises(BratsError) as error:
        LocalSelection.open(renamed)
    message = str(error.value)
    assert "case 'BraTS20_007'" in message and "missing modality t2" in message  # named as the API names it
    assert tempfile.gettempdir() not in message and "brats_ui_" not in message


def _nifti_bytes(labels: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(labels, np.eye(4)).to_bytes())


def test_read_segmentation_checks_what_the_api_sent():
    labels = np.zeros((6, 7, 8), dtype=np.uint8)
    labels[1:3, 2:4, 3:5] = 4
    np.testing.assert_array_equal(read_segmentation(_nifti_bytes(labels), (6, 7, 8)), labels)
    with pytest.raises(BratsError, match="differs from the case shape"):
        read_segmentation(_nifti_bytes(labels), (6, 7, 9))
    with pytest.raises(BratsError, match="not a readable NIfTI"):
        read_segmentation(b"\x1f\x8bgarbage", (6, 7, 8))
    with pytest.raises(BratsError, match=r"labels outside \{0, 1, 2, 4\}: \[3, 7\]"):
        read_segmentation(_nifti_bytes(labels + 3), (6, 7, 8))
    with pytest.raises(BratsError, match="expected dtype uint8"):
        read_segmentation(_nifti_bytes(labels.astype(np.float32)), (6, 7, 8))
    with pytest.raises(BratsError, match="decompresses to more"):
        read_segmentation(gzip.compress(bytes(10_000_000)), (6, 7, 8))


# --------------------------------------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def sample_zip(tmp_path_factory) -> Path:
    return synthetic_zip(tmp_path_factory.mktemp("sample"), shape=SHAPE)


@pytest.fixture(scope="module")
def api(tmp_path_factory, sample_zip):
    """The real API with a fake segmenter: (base URL, request counter)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("api"), sample_zip=sample_zip)
    with serve_api(settings, Oracle()) as served:
        yield served


@pytest.fixture(scope="module")
def keyed_api(tmp_path_factory, sample_zip):
    settings = Settings(data_dir=tmp_path_factory.mktemp("api_key"), sample_zip=sample_zip, api_key="secret")
    with serve_api(settings, Oracle()) as served:
        yield served


@pytest.fixture()
def slow_api(tmp_path, sample_zip):
    """An API whose predictions wait until the test ends."""
    hold = threading.Event()
    with serve_api(Settings(data_dir=tmp_path / "api", sample_zip=sample_zip), Oracle(hold)) as served:
        yield served
        hold.set()


def test_client_round_trip(api, case_files):
    url, _ = api
    client = ApiClient(url)
    assert client.health()["status"] == "ok"
    _, named = case_files
    answer = client.upload(named)
    [case] = answer["cases"]
    assert case["shape"] == list(SHAPE) and case["has_segmentation"]
    result = client.predict(answer["upload_id"], case["case_id"])
    assert result["metrics"]["WT"]["dice"] == 1.0
    labels = read_segmentation(client.segmentation(result["prediction_id"]), SHAPE)
    assert labels.any()
    assert zipfile.is_zipfile(io.BytesIO(client.download_sample()))
    client.delete_upload(answer["upload_id"])
    with pytest.raises(ApiError, match="not found") as error:
        client.predict(answer["upload_id"])
    assert error.value.status == 404


def test_client_errors_are_readable(api, keyed_api):
    url, _ = api
    with pytest.raises(ApiError, match=r"notes.txt. is neither a \.zip nor a NIfTI file.*\(HTTP 422\)$"):
        ApiClient(url).upload([("notes.txt", b"hello")])
    with pytest.raises(ApiError, match=r"upload_id: Field required \(HTTP 422\)"):
        ApiClient(url)._json("POST", "/predict", 5, json={})
    with pytest.raises(ApiError, match="Check the API key") as error:
        ApiClient(keyed_api[0], "wrong").download_sample()
    assert error.value.status == 401
    assert ApiClient(keyed_api[0], "secret").download_sample()
    with pytest.raises(ApiError, match="Cannot reach the API"):
        ApiClient(f"http://127.0.0.1:{free_port()}").health()
    with pytest.raises(ApiError, match="must start with http"):
        ApiClient("localhost:8000").health()


def test_client_timeout(slow_api, case_files):
    url, _ = slow_api
    client = ApiClient(url, timeouts=Timeouts(connect=5, health=5, long=1.0))
    answer = client.upload(case_files[1])
    with pytest.raises(ApiError, match="did not answer within 1 s"):
        client.predict(answer["upload_id"])


def test_timeouts_and_url_from_the_environment(monkeypatch):
    monkeypatch.setenv("BRATS_API_TIMEOUT", "2.5")
    assert Timeouts.from_env() == Timeouts(connect=2.5, health=2.5, long=2.5)
    monkeypatch.setenv("BRATS_API_TIMEOUT", "soon")
    assert Timeouts.from_env() == Timeouts()
    monkeypatch.setenv("BRATS_API_URL", "http://api.example:9000")
    assert default_api_url() == "http://api.example:9000"
    monkeypatch.delenv("BRATS_API_URL")
    assert default_api_url() == "http://127.0.0.1:8000"


def test_the_ui_never_unpickles():
    for path in (REPO_ROOT / "streamlit_app").glob("*.py"):
        source = path.read_text()
        assert not any(word in source for word in ("import pickle", "joblib", "torch.load", "np.load")), path


# ----------------------------------------------------------------------------------------------- the app
def _app(url: str, monkeypatch: pytest.MonkeyPatch, timeout: float | None = None) -> AppTest:
    monkeypatch.setenv("BRATS_API_URL", url)
    monkeypatch.delenv("BRATS_API_KEY", raising=False)
    if timeout is not None:
        monkeypatch.setenv("BRATS_API_TIMEOUT", str(timeout))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    return at


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error] + [e.value for e in at.sidebar.error]


def test_app_shows_health_then_sample_prediction_and_viewer(api, monkeypatch):
    url, app = api
    sent = app.requests.copy()
    at = _app(url, monkeypatch)
    assert "model **sspp** on **cpu**" in at.sidebar.success[0].value
    assert "try the sample" in at.info[0].value.lower()

    at.button(key="take_sample").click().run()
    assert not at.exception and not _errors(at)
    assert at.table[0].value.index.tolist() == ["synth_ui"]
    assert at.get("download_button")[0].label == "Download the sample zip"
    assert any("a training score, not what to expect on a new patient" in c.value for c in at.caption)
    images = at.get("image")
    assert [img.proto.imgs[0].caption for img in images] == [
        "T1",
        "T1ce",
        "T2",
        "FLAIR",
        "True mask",
        "Overlay: true mask on FLAIR",
    ]

    at.button(key="run").click().run()
    assert not at.exception and not _errors(at)
    [status] = at.status  # the progress box of the run, closed with the total time
    assert status.label.startswith("Segmented synth_ui (") and status.state == "complete"
    assert at.progress[0].value == 100 and "downloading the label map… done in" in at.progress[0].proto.text
    volumes, metrics = at.table[1].value, at.table[2].value
    assert volumes.index.tolist() == ["WT", "TC", "ET"] and float(volumes.iloc[0, 0]) > 0
    assert metrics.loc["WT", "Dice"] == "1.000" and metrics.loc["ET", "HD95 (mm)"] == "0.00"
    captions = [img.proto.imgs[0].caption for img in at.get("image")]
    assert captions[4:] == ["True mask", "Predicted mask", "Overlay: prediction on FLAIR"]
    assert [b.label for b in at.get("download_button")][-1] == "Download the predicted segmentation (.nii.gz)"
    slider = at.slider[0]
    assert slider.value == largest_tumour_slice(_sample_labels(), viewer.PLANES["axial"])
    assert any("NCR/NET" in m.value for m in at.markdown)

    # Moving the slider, changing the plane and the binary switch send nothing to the API.
    before = dict(app.requests)
    slider.set_value(3).run()
    at.radio(key="plane").set_value("coronal").run()
    at.toggle(key="binary").set_value(True).run()
    assert not at.exception and not _errors(at)
    assert at.slider[0].value == largest_tumour_slice(_sample_labels(), viewer.PLANES["coronal"])
    assert any(viewer.WHOLE_TUMOUR_NAME in m.value for m in at.markdown)
    # The size control: one image per row uses the page width.
    image_columns = [column for column in at.columns if column.get("image")]
    assert {column.weight for column in image_columns} == {0.25}
    at.selectbox(key="per_row").set_value(1).run()
    image_columns = [column for column in at.columns if column.get("image")]
    assert len(image_columns) == len(at.get("image")) == 7 and {c.weight for c in image_columns} == {1.0}
    assert dict(app.requests) == before
    sent = app.requests - sent
    assert [sent[("GET", p)] for p in ("/", "/download_sample")] == [1, 1]
    assert [sent[("POST", p)] for p in ("/upload", "/predict")] == [1, 1]
    assert sum(n for (method, path), n in sent.items() if path.endswith("/segmentation")) == 1


def _sample_labels() -> np.ndarray:
    case = make_synthetic_case("synth_ui", shape=SHAPE, seed=3)
    return viewer.to_ras(case.seg, case.affine)


def test_app_uploads_nifti_files_once(api, case_files, monkeypatch):
    url, app = api
    at = _app(url, monkeypatch)
    uploads = app.requests[("POST", "/upload")]
    _, named = case_files
    images = [(name, data, "application/gzip") for name, data in named if "_seg" not in name]
    at.file_uploader(key="uploader").set_value(images).run()
    assert not at.exception and not _errors(at)
    assert at.table[0].value["true mask"].tolist() == ["no"]
    at.button(key="run").click().run()
    assert not at.exception and not _errors(at)
    assert any("Dice and HD95 are not available" in i.value for i in at.info)
    at.run()
    assert app.requests[("POST", "/upload")] == uploads + 1
    folder = Path(at.session_state["local"]._folder.name)
    at.file_uploader(key="uploader").set_value(None).run()
    assert not at.exception and "try the sample" in at.info[0].value.lower()
    assert not folder.exists()  # the local copy goes with the selection


@pytest.fixture(scope="module")
def two_model_api(tmp_path_factory, sample_zip, random_unet_export):
    """The API serving sspp (the fake segmenter, Dice 1) and unet (a tiny random export)."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("api_models"), sample_zip=sample_zip, device="cpu",
        allowed_models=("sspp", "unet"), checkpoints={"unet": random_unet_export},
    )  # fmt: skip
    with serve_api(settings, Oracle()) as served:
        yield served


def test_app_compares_the_served_models_side_by_side(two_model_api, monkeypatch):
    url, app = two_model_api
    at = _app(url, monkeypatch)
    assert "models **sspp**, **unet** (default **sspp**) on **cpu**" in at.sidebar.success[0].value
    switch = at.sidebar.multiselect(key="models")
    assert switch.options == ["U-Net + SSPP (sspp)", "U-Net (unet)"] and switch.value == ["sspp"]
    at.button(key="take_sample").click().run()
    at.button(key="run").click().run()
    assert not at.exception and not _errors(at)
    assert at.table[2].value.loc["WT", "Dice"] == "1.000"  # one model: the usual two tables
    predicts = app.requests[("POST", "/predict")]

    at.sidebar.multiselect(key="models").set_value(["sspp", "unet"]).run()
    at.button(key="run").click().run()
    assert not at.exception and not _errors(at)
    assert app.requests[("POST", "/predict")] == predicts + 1  # only the model not run yet
    volumes, dice, hd95 = (table.value for table in at.table[1:4])
    for table in (volumes, dice, hd95):
        assert table.columns.tolist() == ["U-Net + SSPP", "U-Net"] and table.index.tolist() == ["WT", "TC", "ET"]
    assert dice["U-Net + SSPP"].tolist() == ["1.000"] * 3 and hd95.loc["WT", "U-Net + SSPP"] == "0.00"
    assert all(0 <= float(value) <= 1 for value in dice["U-Net"])
    captions = [img.proto.imgs[0].caption for img in at.get("image")]
    assert captions[4:] == [
        "True mask", "Predicted: U-Net + SSPP", "Predicted: U-Net",
        "Overlay: U-Net + SSPP on FLAIR", "Overlay: U-Net on FLAIR",
    ]  # fmt: skip
    assert [b.label for b in at.get("download_button")][-2:] == [
        "Download the U-Net + SSPP segmentation (.nii.gz)", "Download the U-Net segmentation (.nii.gz)"
    ]
    # Back to one model: its results again, without a request.
    before = dict(app.requests)
    at.sidebar.multiselect(key="models").set_value(["unet"]).run()
    assert not at.exception and dict(app.requests) == before
    assert at.table[2].value.columns.tolist() == ["Dice", "HD95 (mm)"]


def test_app_sends_test_time_flips_when_switched_on(two_model_api, monkeypatch):
    """The sidebar's flips switch goes with the request; a flipped prediction is a new one (not the cached
    plain one), and a model without flips answers with a readable error."""
    url, app = two_model_api
    at = _app(url, monkeypatch)
    at.sidebar.multiselect(key="models").set_value(["unet"]).run()
    at.button(key="take_sample").click().run()
    at.button(key="run").click().run()
    assert not at.exception and not _errors(at)
    predicts = app.requests[("POST", "/predict")]
    at.sidebar.toggle(key="tta").set_value(True).run()
    at.button(key="run").click().run()
    assert not at.exception and not _errors(at)
    assert app.requests[("POST", "/predict")] == predicts + 1
    assert at.status[0].label.startswith("Segmented synth_ui")
    assert any("with flips" in (p.proto.text or "") for p in at.progress)
    assert any("U-Net with test-time flips on cpu" in c.value for c in at.caption)  # the results say so
    at.sidebar.multiselect(key="models").set_value(["sspp"]).run()  # the fake segmenter has no flips
    at.button(key="run").click().run()
    assert not at.exception
    assert any("no test-time flips" in e for e in _errors(at))
    assert at.status[0].label.startswith("Segmentation of synth_ui failed") and at.status[0].state == "error"


def test_a_file_of_another_kind_is_named_in_an_error(api, monkeypatch):
    """Every chosen file reaches the validation (the uploader does not filter by type, which only marked a wrong
    file with an icon): a .txt gets a message naming it."""
    url, _ = api
    at = _app(url, monkeypatch)
    at.file_uploader(key="uploader").set_value(("notes.txt", b"my notes", "text/plain")).run()
    assert not at.exception
    assert any("notes.txt" in e and "neither a .zip nor a NIfTI file" in e for e in _errors(at))


def test_an_hd95_of_the_empty_mask_convention_is_explained() -> None:
    from streamlit_app.results import _empty_mask_note

    measured = {"metrics": {"WT": {"hd95_mm": 4.0}, "ET": {"hd95_mm": 6.4}}}
    assert _empty_mask_note([measured]) == "" and _empty_mask_note([{"metrics": None}]) == ""
    empty = {"metrics": {"WT": {"hd95_mm": 4.0}, "ET": {"hd95_mm": 373.13}}}
    assert "one of the two masks of that region is empty" in _empty_mask_note([measured, empty])


def test_app_reports_the_api_down(monkeypatch):
    at = _app(f"http://127.0.0.1:{free_port()}", monkeypatch)
    assert "Cannot reach the API" in at.sidebar.error[0].value
    at.button(key="take_sample").click().run()
    assert not at.exception
    assert any("Could not fetch the sample: Cannot reach the API" in e for e in _errors(at))


def test_app_shows_one_error_for_rejected_files_naming_them(api, monkeypatch):
    url, app = api
    at = _app(url, monkeypatch)
    at.file_uploader(key="uploader").set_value(
        ("scan_t1.nii", b"not a nifti", "application/octet-stream")
    ).run()
    assert not at.exception
    [error] = _errors(at)  # the API's check only, not the UI's own as well
    assert error.startswith("Cannot use scan_t1.nii: case 'scan' in the upload/scan: missing modality t1ce, t2, flair")
    assert "(HTTP 422)" in error and "/tmp" not in error and "brats_ui_" not in error
    assert not at.get("image") and "run" not in [button.key for button in at.button]


def test_app_reads_the_files_itself_when_the_api_is_down_naming_them(monkeypatch):
    at = _app(f"http://127.0.0.1:{free_port()}", monkeypatch)
    at.file_uploader(key="uploader").set_value(("scan_t1.nii", b"not a nifti", "application/octet-stream")).run()
    assert not at.exception
    [local] = [e.value for e in at.error if e.value.startswith("Cannot read these files:")]
    assert "case 'scan' in the upload/scan: missing modality t1ce" in local  # named as the API names it
    assert "/tmp" not in local and "brats_ui_" not in local and str(Path(tempfile.gettempdir())) not in local


def test_app_reports_a_prediction_timeout(slow_api, monkeypatch):
    url, _ = slow_api
    at = _app(url, monkeypatch, timeout=3)
    at.button(key="take_sample").click().run()
    at.button(key="run").click().run()
    assert not at.exception
    assert any("Prediction failed: The API at" in e and "did not answer within 3 s" in e for e in _errors(at))


def test_app_reports_a_wrong_api_key_and_recovers(keyed_api, monkeypatch):
    url, _ = keyed_api
    at = _app(url, monkeypatch)
    at.button(key="take_sample").click().run()
    assert any("refused access (HTTP 401)" in e and "Check the API key" in e for e in _errors(at))
    at.text_input(key="api_key").set_value("secret").run()
    at.button(key="take_sample").click().run()
    assert not at.exception and not _errors(at)
    assert at.table[0].value.index.tolist() == ["synth_ui"]


def test_app_uploads_again_when_the_server_forgot_the_upload(api, monkeypatch):
    url, app = api
    at = _app(url, monkeypatch)
    at.button(key="take_sample").click().run()
    [answer] = [entry["response"] for key, entry in at.session_state["uploads"].items() if key[0] == url]
    requests.delete(f"{url}/uploads/{answer['upload_id']}", timeout=10).raise_for_status()
    uploads = app.requests[("POST", "/upload")]
    at.button(key="run").click().run()
    assert not at.exception and not _errors(at)
    assert at.table[2].value.loc["WT", "Dice"] == "1.000"
    assert app.requests[("POST", "/upload")] == uploads + 1


def test_app_rechecks_the_api_on_request(api, monkeypatch):
    url, app = api
    at = _app(url, monkeypatch)
    checks = app.requests[("GET", "/")]
    at.run()
    assert app.requests[("GET", "/")] == checks  # reused for HEALTH_TTL_S
    at.button(key="recheck").click().run()
    assert app.requests[("GET", "/")] == checks + 1
    assert "API reachable" in at.sidebar.success[0].value


def _progress_script() -> None:
    import time

    import streamlit as st

    from streamlit_app.progress import Progress

    progress = Progress("Working", steps=2)
    assert progress.run("first step…", lambda: time.sleep(0.6) or 7, expected_s=0.5) == 7
    try:
        progress.run("second step…", lambda: 1 / 0)
    except ZeroDivisionError:
        st.session_state.failed = True
    progress.finish("Done", ok=not st.session_state.get("failed"))


def test_progress_runs_each_step_off_the_script_thread_and_reports_the_end():
    at = AppTest.from_function(_progress_script, default_timeout=30)
    at.run()
    assert not at.exception and at.session_state["failed"]
    [status] = at.status
    assert status.label.startswith("Done (") and status.state == "error"  # the failed step shows in red
    [bar] = at.progress
    assert bar.value == 50 and bar.proto.text.startswith("second step… failed after 0.")

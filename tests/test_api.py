"""The API's endpoints through TestClient: uploads, predictions, results, sample, deletion, TTL and busy slots."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from api_support import SAMPLE_ZIP, api_settings, multipart
from fastapi.testclient import TestClient
from PIL import Image
from support import Oracle, case_paths, case_zip, write_fusion_cv, zip_bytes

from brats_app.registry import default_checkpoint
from brats_core.cases import Case, CaseFiles, find_cases, load_case
from brats_core.config import REGIONS, REPO_ROOT
from brats_core.errors import BratsError, CheckpointError
from brats_core.figures import LABEL_COLOURS
from brats_core.nifti import save_labels
from brats_core.synth import make_synthetic_case, write_case
from Deep_Learning_Model.export import write_random_export
from Deep_Learning_Model.model import ModelConfig
from sspp_unet_api.app import overlay as overlay_png
from sspp_unet_api.app.config import Settings
from sspp_unet_api.app.main import create_app
from sspp_unet_api.app.storage import NotFoundError, Storage

SPACING = (1.2, 1.0, 2.0)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Blocking(Oracle):
    """Oracle that holds its inference slot until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def predict(self, case: Case) -> np.ndarray:
        self.entered.set()
        assert self.release.wait(30), "test never released the blocking model"
        return super().predict(case)


@pytest.fixture(scope="module")
def two_cases(synthetic_root: Path) -> list[CaseFiles]:
    return find_cases(synthetic_root)[:2]


@pytest.fixture(scope="module")
def anisotropic_case(tmp_path_factory: pytest.TempPathFactory) -> CaseFiles:
    """A synthetic case with a non-identity affine (rotation, anisotropic voxels, offset)."""
    angle = np.deg2rad(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(SPACING)
    affine[:3, 3] = (-30.0, 12.5, 7.0)
    case = make_synthetic_case("aniso_case", shape=(48, 40, 24), affine=affine, seed=3)
    return write_case(case, tmp_path_factory.mktemp("aniso"))


@pytest.fixture()
def client(tmp_path: Path, random_export: Path):
    with TestClient(create_app(api_settings(tmp_path / "data", random_export))) as test_client:
        yield test_client


def oracle_client(tmp_path: Path, export: Path, segmenter: Oracle | None = None, **overrides) -> TestClient:
    return TestClient(create_app(api_settings(tmp_path / "data", export, **overrides), segmenter or Oracle()))


def upload(client: TestClient, files: list[CaseFiles] | CaseFiles) -> dict:
    if isinstance(files, CaseFiles):
        response = client.post("/upload", files=multipart(case_paths(files)))
    else:
        response = client.post("/upload", files=[("files", ("cases.zip", case_zip(files), "application/zip"))])
    assert response.status_code == 201, response.text
    return response.json()


def load_nifti_bytes(data: bytes, tmp_path: Path) -> nib.Nifti1Image:
    path = tmp_path / f"{uuid.uuid4().hex}.nii.gz"
    path.write_bytes(data)
    return nib.load(path)


# ---------------------------------------------------------------------------------------------------- health
def test_health_reports_the_served_model(client: TestClient) -> None:
    body = client.get("/").json()
    assert body["status"] == "ok" and body["model"] == "sspp" and body["models"] == ["sspp"]
    assert body["checkpoint"] == "sspp.pt" and body["device"] == "cpu"
    assert body["version"] and body["inference_slots"] == 1 and body["active_inferences"] == 0


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/", "/upload", "/predict", "/download_sample", "/uploads/{upload_id}",
                 "/predictions/{prediction_id}/segmentation", "/predictions/{prediction_id}/overlay"):
        assert path in paths
    assert set(paths["/predict"]["post"]["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------------------------------------------- upload
def test_upload_zip_of_two_cases(client: TestClient, two_cases: list[CaseFiles], tmp_path: Path) -> None:
    before = datetime.now(timezone.utc)
    body = upload(client, two_cases)
    assert uuid.UUID(body["upload_id"]).version == 4
    assert [c["case_id"] for c in body["cases"]] == [c.case_id for c in two_cases]
    for case in body["cases"]:
        assert case == {"case_id": case["case_id"], "modalities": ["t1", "t1ce", "t2", "flair"],
                        "shape": [48, 48, 32], "spacing_mm": [1.0, 1.0, 1.0], "has_segmentation": True}
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert 3590 < (expires - before).total_seconds() < 3610
    assert (tmp_path / "data" / body["upload_id"] / "upload.json").is_file()
    assert client.get(f"/uploads/{body['upload_id']}").json() == body


def test_upload_loose_files_names_the_case_by_their_prefix(client: TestClient, tmp_path: Path) -> None:
    case = make_synthetic_case("BraTS-GLI-00042-000", shape=(48, 48, 32), seed=1)
    case.seg = None
    files = write_case(case, tmp_path / "in", naming="brats2023")
    body = upload(client, files)
    assert [(c["case_id"], c["has_segmentation"]) for c in body["cases"]] == [("BraTS-GLI-00042-000", False)]


def test_a_brats2023_case_is_scored_with_its_label_3_as_enhancing_tumour(tmp_path: Path, random_export: Path) -> None:
    """Its seg marks ET 3: read as 4, so the oracle (which predicts the seg) scores Dice 1 on every region, ET too;
    the label map that comes back uses 0/1/2/4."""
    case = make_synthetic_case("BraTS-GLI-00043-000", shape=(48, 48, 32), seed=2)
    files = write_case(case, tmp_path / "in", naming="brats2023")
    assert 3 in np.asarray(nib.load(files.seg).dataobj)
    with oracle_client(tmp_path, random_export) as client:
        body = client.post("/predict", files=multipart(case_paths(files))).json()
        assert {r: m["dice"] for r, m in body["metrics"].items()} == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
        labels = nib.load(_saved(client, body["urls"]["segmentation"], tmp_path)).get_fdata()
        assert set(np.unique(labels)) <= {0, 1, 2, 4} and (labels == 4).sum() == (case.seg == 4).sum()


def _saved(client: TestClient, url: str, tmp_path: Path) -> Path:
    path = tmp_path / "returned_seg.nii.gz"
    path.write_bytes(client.get(url).content)
    return path


# --------------------------------------------------------------------------------------------------- predict
def test_predict_with_the_tiny_model_writes_the_label_map_in_the_input_geometry(
    client: TestClient, anisotropic_case: CaseFiles, tmp_path: Path
) -> None:
    upload_id = upload(client, anisotropic_case)["upload_id"]
    response = client.post("/predict", json={"upload_id": upload_id})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["case_id"] == "aniso_case" and body["model"] == "sspp" and body["device"] == "cpu"
    assert body["shape"] == [48, 40, 24] and np.allclose(body["spacing_mm"], SPACING)
    assert set(body["metrics"]) == set(REGIONS) and 0 < body["runtime_seconds"] <= body["total_seconds"]
    reference = nib.load(anisotropic_case.images["t1"])
    seg = client.get(body["urls"]["segmentation"])
    assert seg.status_code == 200 and seg.headers["content-type"] == "application/gzip"
    image = load_nifti_bytes(seg.content, tmp_path)
    labels = np.asanyarray(image.dataobj)
    assert labels.shape == (48, 40, 24) and labels.dtype == np.uint8
    assert np.allclose(image.affine, reference.affine, atol=1e-5)
    assert set(np.unique(labels)) <= {0, 1, 2, 4}
    voxel_ml = np.prod(SPACING) / 1000.0
    for region, values in REGIONS.items():  # volumes to 0.1 mL, metrics to 4 decimals (no 22.464000000000002)
        assert body["volumes_ml"][region] == round(np.isin(labels, values).sum() * voxel_ml, 1)
        assert all(value == round(value, 4) for value in body["metrics"][region].values())
    assert client.get(f"/predictions/{body['prediction_id']}").json() == body


def test_volumes_and_metrics_are_exact_for_a_perfect_prediction(
    tmp_path: Path, random_export: Path, anisotropic_case: CaseFiles
) -> None:
    with oracle_client(tmp_path, random_export) as client:
        upload_id = upload(client, anisotropic_case)["upload_id"]
        body = client.post("/predict", json={"upload_id": upload_id, "case_id": "aniso_case"}).json()
    seg = np.asanyarray(nib.load(anisotropic_case.seg).dataobj)
    for region, values in REGIONS.items():
        assert body["volumes_ml"][region] == round(np.isin(seg, values).sum() * np.prod(SPACING) / 1000, 1)
        assert body["metrics"][region] == {"dice": 1.0, "hd95_mm": 0.0, "sensitivity": 1.0, "specificity": 1.0}


def test_predict_one_shot_multipart(client: TestClient, two_cases: list[CaseFiles]) -> None:
    response = client.post("/predict", files=multipart(case_paths(two_cases[1])), data={"model": "sspp"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["case_id"] == two_cases[1].case_id and body["metrics"] is not None
    cases = client.get(f"/uploads/{body['upload_id']}").json()["cases"]
    assert [c["case_id"] for c in cases] == [two_cases[1].case_id]


def test_predict_picks_a_case_of_a_multi_case_upload(
    tmp_path: Path, random_export: Path, two_cases: list[CaseFiles]
) -> None:
    with oracle_client(tmp_path, random_export) as client:
        upload_id = upload(client, two_cases)["upload_id"]
        ambiguous = client.post("/predict", json={"upload_id": upload_id})
        assert ambiguous.status_code == 422 and "case_id" in ambiguous.json()["detail"]
        unknown = client.post("/predict", json={"upload_id": upload_id, "case_id": "nope"})
        assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
        chosen = client.post("/predict", json={"upload_id": upload_id, "case_id": two_cases[1].case_id})
        assert chosen.status_code == 200 and chosen.json()["case_id"] == two_cases[1].case_id


def test_model_field_picks_an_allowed_model(
    tmp_path: Path, random_export: Path, two_cases: list[CaseFiles]
) -> None:
    unet = write_random_export(tmp_path / "unet.pt", ModelConfig(arch="unet", base_width=8))
    settings = api_settings(tmp_path / "data", random_export, allowed_models=("sspp", "unet"),
                            checkpoints={"sspp": random_export, "unet": unet})
    with TestClient(create_app(settings)) as client:
        assert client.get("/").json()["models"] == ["sspp", "unet"]
        upload_id = upload(client, two_cases[0])["upload_id"]
        response = client.post("/predict", json={"upload_id": upload_id, "model": "unet"})
        assert response.status_code == 200 and response.json()["model"] == "unet"
        for model in ("naive", "no-such-model"):
            refused = client.post("/predict", json={"upload_id": upload_id, "model": model})
            assert refused.status_code == 422 and "not served" in refused.json()["detail"]


def test_tta_runs_the_served_network_with_test_time_flips(
    client: TestClient, anisotropic_case: CaseFiles, tmp_path: Path
) -> None:
    """``tta`` (JSON or one-shot form field) predicts with the flips (same network, no second copy of its
    weights), says so in the response and the stored record; a bad value is a 422 that keeps nothing."""
    from Deep_Learning_Model.predictor import Predictor

    service = client.app.state.service
    plain = service.model("sspp")
    flipped = service.model("sspp", tta=True)
    assert isinstance(flipped, Predictor) and flipped.tta and not plain.tta and flipped.model is plain.model
    upload_id = upload(client, anisotropic_case)["upload_id"]
    body = client.post("/predict", json={"upload_id": upload_id, "tta": True}).json()
    assert body["tta"] is True and client.get(f"/predictions/{body['prediction_id']}").json()["tta"] is True
    expected = flipped.predict(load_case(anisotropic_case))
    labels = np.asanyarray(load_nifti_bytes(client.get(body["urls"]["segmentation"]).content, tmp_path).dataobj)
    np.testing.assert_array_equal(labels, expected)
    assert client.post("/predict", json={"upload_id": upload_id}).json()["tta"] is False
    one_shot = client.post("/predict", files=multipart(case_paths(anisotropic_case)), data={"tta": "true"})
    assert one_shot.status_code == 200 and one_shot.json()["tta"] is True
    root = client.app.state.storage.root
    kept = sorted(root.iterdir())
    refused = client.post("/predict", files=multipart(case_paths(anisotropic_case)), data={"tta": "maybe"})
    assert refused.status_code == 422 and "tta" in refused.text
    assert sorted(root.iterdir()) == kept  # the one-shot upload of the refused request is gone
    assert client.post("/predict", json={"upload_id": upload_id, "tta": "maybe"}).status_code == 422
    for loose in ("yes", "true", 1):  # JSON takes true or false only, as the schema says (no coercion)
        assert client.post("/predict", json={"upload_id": upload_id, "tta": loose}).status_code == 422
    assert "form field 'tta' must be true or false, got 'maybe'" in refused.json()["detail"]


def test_the_fusion_is_served_from_its_manifest_with_or_without_flips(
    tmp_path: Path, random_export: Path, random_unet_export: Path, anisotropic_case: CaseFiles
) -> None:
    """``model: fusion`` averages the two networks named by its manifest and applies its tuned post-processing."""
    from Deep_Learning_Model.fusion import FusionSegmenter
    from Deep_Learning_Model.fusion_manifest import write_manifest

    manifest = write_manifest(tmp_path / "fusion.json", [random_unet_export, random_export],
                              write_fusion_cv(tmp_path / "cv"))
    settings = api_settings(tmp_path / "data", random_export, allowed_models=("sspp", "fusion"),
                            checkpoints={"sspp": random_export, "fusion": manifest})
    with TestClient(create_app(settings)) as client:
        health = client.get("/").json()
        assert health["models"] == ["sspp", "fusion"] and health["checkpoint"] == "sspp.pt"
        service = client.app.state.service
        plain = service.model("fusion")  # the served sspp's network is shared, the unet (not served) is loaded
        assert plain.predictors[1] is service.model("sspp")
        assert Path(plain.predictors[0].meta["path"]).resolve() == random_unet_export.resolve()
        fused = service.model("fusion", tta=True)
        assert isinstance(fused, FusionSegmenter) and fused.tta and fused.postprocess.min_component_mm3 > 0
        assert fused.predictors[1].model is service.model("sspp").model
        upload_id = upload(client, anisotropic_case)["upload_id"]
        body = client.post("/predict", json={"upload_id": upload_id, "model": "fusion", "tta": True}).json()
        assert body["model"] == "fusion" and body["tta"] is True
        labels = np.asanyarray(load_nifti_bytes(client.get(body["urls"]["segmentation"]).content, tmp_path).dataobj)
        np.testing.assert_array_equal(labels, fused.predict(load_case(anisotropic_case)))


def test_tta_is_refused_for_a_model_without_flips(
    tmp_path: Path, random_export: Path, anisotropic_case: CaseFiles
) -> None:
    with oracle_client(tmp_path, random_export) as client:  # the oracle, like the naive model, has no flips
        upload_id = upload(client, anisotropic_case)["upload_id"]
        refused = client.post("/predict", json={"upload_id": upload_id, "tta": True})
        assert refused.status_code == 422 and "no test-time flips" in refused.json()["detail"]
        assert client.post("/predict", json={"upload_id": upload_id}).status_code == 200


def test_models_with_pickled_checkpoints_are_never_served(tmp_path: Path, random_export: Path) -> None:
    with pytest.raises(BratsError, match="pickle"):
        create_app(api_settings(tmp_path, random_export, allowed_models=("sspp", "ridge")))
    with pytest.raises(BratsError, match=r"unknown model\(s\) foo in BRATS_ALLOWED_MODELS"):
        create_app(api_settings(tmp_path, random_export, allowed_models=("sspp", "foo")))


# --------------------------------------------------------------------------------------------------- results
def test_overlay_png(tmp_path: Path, random_export: Path, anisotropic_case: CaseFiles) -> None:
    with oracle_client(tmp_path, random_export) as client:
        upload_id = upload(client, anisotropic_case)["upload_id"]
        prediction = client.post("/predict", json={"upload_id": upload_id}).json()
        url = prediction["urls"]["overlay"]
        for params, size, caption in (
            ({}, (48, 40), None),
            ({"axis": "coronal", "index": 3}, (48, 24), "coronal slice 3 of 0-39"),
            ({"axis": "sagittal", "index": 47}, (40, 24), "sagittal slice 47 of 0-47"),
        ):
            response = client.get(url, params=params)
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            picture = Image.open(io.BytesIO(response.content))
            scale = -(-overlay_png.MIN_WIDTH // size[0])  # small slices are enlarged so that the text fits
            assert picture.size == (size[0] * scale, size[1] * scale + overlay_png.BAND_HEIGHT)
            assert picture.mode == "RGB"
            assert picture.text["Slice"] == (caption or picture.text["Slice"])
            band = np.asarray(picture)[size[1] * scale:].reshape(-1, 3)
            for colour in LABEL_COLOURS.values():  # the legend: one square per label colour, under the slice
                assert (band == colour).all(axis=1).sum() >= 100, colour
        default = Image.open(io.BytesIO(client.get(url).content))
        assert default.text["Slice"].startswith("axial slice ") and default.text["Slice"].endswith(" of 0-23")
        colours = np.asarray(default)[: -overlay_png.BAND_HEIGHT].reshape(-1, 3)
        assert (colours[:, 0] != colours[:, 1]).any(), "the default slice shows the tumour in colour"
        # The slice number is drawn: the caption rows of two slices differ.
        band = slice(-overlay_png.BAND_HEIGHT, -overlay_png.BAND_HEIGHT // 2)
        bands = [np.asarray(Image.open(io.BytesIO(client.get(url, params={"index": i}).content)))[band]
                 for i in (3, 4)]
        assert (bands[0] != bands[1]).any()
        for params in ({"index": 24}, {"index": -1}, {"axis": "oblique"}):
            bad = client.get(url, params=params)
            assert bad.status_code == 422, params


def test_download_sample_is_the_committed_zip(client: TestClient) -> None:
    first, second = client.get("/download_sample"), client.get("/download_sample")
    assert first.status_code == 200 and first.headers["content-type"] == "application/zip"
    assert first.content == second.content == SAMPLE_ZIP.read_bytes()
    names = zipfile.ZipFile(io.BytesIO(first.content)).namelist()
    case_id = names[0].split("/")[0]
    assert sorted(names) == [f"{case_id}/{case_id}_{m}.nii.gz" for m in ("flair", "seg", "t1", "t1ce", "t2")]
    attribution = (SAMPLE_ZIP.parent / "ATTRIBUTION.md").read_text()
    assert case_id in attribution and "Menze" in attribution and "1811.02629" in attribution


def test_delete_removes_the_upload_and_its_predictions(
    tmp_path: Path, random_export: Path, two_cases: list[CaseFiles]
) -> None:
    with oracle_client(tmp_path, random_export) as client:
        upload_id = upload(client, two_cases[0])["upload_id"]
        prediction_id = client.post("/predict", json={"upload_id": upload_id}).json()["prediction_id"]
        assert client.delete(f"/uploads/{upload_id}").status_code == 204
        assert not (tmp_path / "data" / upload_id).exists()
        for path in (f"/uploads/{upload_id}", f"/predictions/{prediction_id}",
                     f"/predictions/{prediction_id}/segmentation"):
            assert client.get(path).status_code == 404
        assert client.delete(f"/uploads/{upload_id}").status_code == 404


# --------------------------------------------------------------------------------------- lifetime and load
def test_uploads_expire_and_the_sweeper_deletes_them(
    tmp_path: Path, random_export: Path, two_cases: list[CaseFiles]
) -> None:
    with oracle_client(tmp_path, random_export, ttl_seconds=1.0, cleanup_interval_seconds=0.1) as client:
        upload_id = upload(client, two_cases[0])["upload_id"]
        prediction_id = client.post("/predict", json={"upload_id": upload_id}).json()["prediction_id"]
        assert client.get(f"/predictions/{prediction_id}/segmentation").status_code == 200
        deadline = time.monotonic() + 10
        while (tmp_path / "data" / upload_id).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (tmp_path / "data" / upload_id).exists()
        assert client.get(f"/uploads/{upload_id}").status_code == 404
        assert client.get(f"/predictions/{prediction_id}/segmentation").status_code == 404


def test_a_prediction_never_recreates_a_deleted_upload(tmp_path: Path) -> None:
    storage = Storage(tmp_path, ttl=60.0)
    upload_id, _ = storage.create_upload()
    storage.commit_upload(upload_id, [])
    prediction_id, folder = storage.create_prediction(upload_id)
    assert folder == tmp_path.resolve() / upload_id / "predictions" / prediction_id and folder.is_dir()
    storage.delete_upload(upload_id)
    with pytest.raises(NotFoundError, match=upload_id):
        storage.create_prediction(upload_id)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ending", ["commit", "abandon"])
def test_a_prediction_finishing_after_its_upload_was_deleted_leaves_nothing(
    tmp_path: Path, two_cases: list[CaseFiles], ending: str
) -> None:
    """DELETE during inference: the label map written afterwards recreates the folders; the end removes them."""
    storage = Storage(tmp_path, ttl=60.0)
    upload_id, _ = storage.create_upload()
    storage.commit_upload(upload_id, [{"case_id": "c", "images": {"flair": "files/c_flair.nii.gz"}, "seg": None}])
    pending = storage.begin_prediction(upload_id, None)
    storage.delete_upload(upload_id)
    save_labels(np.zeros((4, 4, 4), np.uint8), np.eye(4), pending.segmentation)  # as the inference would
    with pytest.raises(NotFoundError, match="deleted during the prediction"):
        if ending == "commit":
            storage.commit_prediction(pending, {"model": "sspp"})
        else:
            storage.abandon_prediction(pending)
    assert list(tmp_path.iterdir()) == []


def test_storage_delete_waits_for_a_record_change_in_another_process(tmp_path: Path) -> None:
    """The record lock is an flock of the storage folder: a second process holding it keeps a delete waiting."""
    storage = Storage(tmp_path, ttl=60.0)
    upload_id, _ = storage.create_upload()
    storage.commit_upload(upload_id, [])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(1.0)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    storage.delete_upload(upload_id)
    waited = time.monotonic() - started
    holder.wait(timeout=10)
    assert waited > 0.3 and not (tmp_path / upload_id).exists()


def test_the_disk_limit_counts_an_upload_s_unpacked_files(
    tmp_path: Path, random_export: Path, two_cases: list[CaseFiles]
) -> None:
    """A zip that fits while it streams in but not once unpacked is refused with 503 and leaves nothing."""
    case = load_case(two_cases[0])
    files = write_case(case, tmp_path / "raw", compress=False)  # .nii: unpacked, far larger than the zip
    archive = tmp_path / "case.zip"
    archive.write_bytes(zip_bytes(((f"c/{p.name}", p.read_bytes()) for p in case_paths(files)), zipfile.ZIP_DEFLATED))
    unpacked = sum(p.stat().st_size for p in case_paths(files))
    assert archive.stat().st_size * 3 < unpacked
    with oracle_client(tmp_path, random_export, max_disk_bytes=unpacked // 2) as client:
        refused = client.post("/upload", files=multipart([archive]))
        assert refused.status_code == 503 and "storage is full" in refused.json()["detail"]
        assert list((tmp_path / "data").iterdir()) == []


def test_full_storage_refuses_uploads_with_503(
    tmp_path: Path, random_export: Path, two_cases: list[CaseFiles]
) -> None:
    """An upload counts against the disk limit as it streams in: room for one case here, not for two."""
    size = sum(p.stat().st_size for p in case_paths(two_cases[0]))
    with oracle_client(tmp_path, random_export, max_disk_bytes=size * 3 // 2) as client:
        upload(client, two_cases[0])
        refused = client.post("/upload", files=multipart(case_paths(two_cases[1])))
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1


def test_health_answers_while_predicting_and_a_full_queue_gets_503(
    tmp_path: Path, random_export: Path, two_cases: list[CaseFiles]
) -> None:
    model = Blocking()
    with oracle_client(tmp_path, random_export, model, queue_timeout_seconds=0.3) as client:
        upload_id = upload(client, two_cases[0])["upload_id"]
        results: list = []
        worker = threading.Thread(
            target=lambda: results.append(client.post("/predict", json={"upload_id": upload_id})))
        worker.start()
        try:
            assert model.entered.wait(20)
            start = time.perf_counter()
            health = client.get("/")
            assert health.status_code == 200 and health.json()["active_inferences"] == 1
            assert time.perf_counter() - start < 2.0
            busy = client.post("/predict", json={"upload_id": upload_id})
            assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
            assert "busy" in busy.json()["detail"]
            one_shot = client.post("/predict", files=multipart(case_paths(two_cases[1])))
            assert one_shot.status_code == 503
            assert [p.name for p in (tmp_path / "data").iterdir()] == [upload_id], "one-shot upload discarded"
        finally:
            model.release.set()
            worker.join(30)
        assert results[0].status_code == 200


# ---------------------------------------------------------------------------------------- start-up, settings
def test_missing_checkpoint_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "sspp.pt"
    with pytest.raises(CheckpointError, match="checkpoint of model 'sspp' not found"), \
            TestClient(create_app(api_settings(tmp_path / "data", missing))):
        pass
    env = {**os.environ, "BRATS_CHECKPOINT": str(missing), "BRATS_DEVICE": "cpu", "BRATS_PORT": "1",
           "BRATS_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run([sys.executable, "sspp_unet_api/app/main.py"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"checkpoint of model 'sspp' not found: {missing}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_settings_from_environment(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "BRATS_PORT": "9001", "BRATS_ALLOWED_MODELS": "unet, naive", "BRATS_CHECKPOINT": "/x/sspp.pt",
        "BRATS_CHECKPOINT_UNET": "/x/unet.pt", "BRATS_CORS_ORIGINS": "https://a.org,https://b.org",
        "BRATS_MAX_REQUEST_BYTES": "1000", "BRATS_TTL_SECONDS": "2.5", "BRATS_API_KEY": "k", "BRATS_HOST": "",
    })
    assert settings.port == 9001 and settings.host == "0.0.0.0"
    assert settings.allowed_models == ("sspp", "unet", "naive")
    assert settings.checkpoint("sspp") == Path("/x/sspp.pt") and settings.checkpoint("unet") == Path("/x/unet.pt")
    assert settings.checkpoint("naive") == default_checkpoint("naive")  # the registry's shipped one
    assert settings.cors_origins == ("https://a.org", "https://b.org")
    assert settings.max_request_bytes == 1000 and settings.ttl_seconds == 2.5 and settings.api_key == "k"
    for env, message in (({"BRATS_PORT": "http"}, "not a number"), ({"BRATS_DEVICE": "tpu"}, "auto, cpu or cuda"),
                         ({"BRATS_MAX_ZIP_MEMBERS": "0"}, "must be positive")):
        with pytest.raises(BratsError, match=message):
            Settings.from_env(env)

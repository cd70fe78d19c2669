"""The API under hostile or broken input: API key, CORS, path traversal, size limits, bad files, unknown ids."""

from __future__ import annotations

import stat
import uuid
import zipfile
from pathlib import Path

import anyio
import numpy as np
import pytest
from api_support import api_settings, multipart
from fastapi.testclient import TestClient
from support import Oracle, case_paths, case_zip, zip_bytes

from brats_core.cases import Case, CaseFiles, find_cases
from brats_core.config import REPO_ROOT
from brats_core.names import safe_name
from brats_core.synth import make_synthetic_case, write_case
from sspp_unet_api.app.main import create_app
from sspp_unet_api.app.middleware import BodySizeLimit

KEY = "s3cret-key"


class Broken(Oracle):
    def predict(self, case: Case) -> np.ndarray:
        raise RuntimeError("secret internal state /srv/model")


@pytest.fixture(scope="module")
def case(synthetic_root: Path) -> CaseFiles:
    return find_cases(synthetic_root)[0]


@pytest.fixture(scope="module")
def other_case(synthetic_root: Path) -> CaseFiles:
    return find_cases(synthetic_root)[1]


def make_client(tmp_path: Path, segmenter: Oracle | None = None, **overrides) -> TestClient:
    """A client of an app serving the test-only oracle (no checkpoint is read)."""
    settings = api_settings(tmp_path / "data", tmp_path / "unused.pt", **overrides)
    return TestClient(create_app(settings, segmenter or Oracle()), raise_server_exceptions=False)


@pytest.fixture()
def client(tmp_path: Path):
    with make_client(tmp_path) as test_client:
        yield test_client


def files_outside(root: Path, data_dir: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and not p.is_relative_to(data_dir)}


def upload_zip(client: TestClient, data: bytes, name: str = "cases.zip"):
    return client.post("/upload", files=[("files", (name, data, "application/zip"))])


def assert_rejected(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "Traceback" not in detail
    for word in words:
        assert word.lower() in detail.lower(), (word, detail)


# ------------------------------------------------------------------------------------------- API key, CORS
def test_api_key_guards_every_endpoint_but_health(tmp_path: Path, case: CaseFiles) -> None:
    with make_client(tmp_path, api_key=KEY) as client:
        assert client.get("/").status_code == 200
        good = {"X-API-Key": KEY}
        upload_id = client.post("/upload", files=multipart(case_paths(case)), headers=good).json()["upload_id"]
        prediction_id = client.post("/predict", json={"upload_id": upload_id}, headers=good).json()["prediction_id"]
        calls = [("POST", "/upload", {"files": multipart(case_paths(case))}),
                 ("POST", "/predict", {"json": {"upload_id": upload_id}}),
                 ("GET", f"/uploads/{upload_id}", {}),
                 ("GET", f"/predictions/{prediction_id}", {}),
                 ("GET", f"/predictions/{prediction_id}/segmentation", {}),
                 ("GET", f"/predictions/{prediction_id}/overlay", {}),
                 ("GET", "/download_sample", {}),
                 ("DELETE", f"/uploads/{upload_id}", {})]
        for method, path, kwargs in calls:
            for headers in ({}, {"X-API-Key": "wrong"}):
                response = client.request(method, path, headers=headers, **kwargs)
                assert_rejected(response, 401, "X-API-Key")
        for method, path, kwargs in calls:
            assert client.request(method, path, headers=good, **kwargs).status_code < 300, path


def test_cors_allows_only_the_configured_origins(tmp_path: Path) -> None:
    with make_client(tmp_path, cors_origins=("https://ui.example.org",)) as client:
        allowed = client.get("/", headers={"Origin": "https://ui.example.org"})
        assert allowed.headers["access-control-allow-origin"] == "https://ui.example.org"
        assert "access-control-allow-origin" not in client.get("/", headers={"Origin": "https://evil.example"}).headers
        preflight = client.options("/predict", headers={"Origin": "https://ui.example.org",
                                                        "Access-Control-Request-Method": "POST",
                                                        "Access-Control-Request-Headers": "X-API-Key"})
        assert preflight.status_code == 200 and "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    with make_client(tmp_path) as client:
        assert "access-control-allow-origin" not in client.get("/", headers={"Origin": "https://ui.example.org"}).headers


# ------------------------------------------------------------------------------------------ path traversal
@pytest.mark.parametrize(("member", "reason"), [
    ("../evil_t1.nii.gz", "'..'"),
    ("/tmp/evil_t1.nii.gz", "absolute"),
    ("C:/evil_t1.nii.gz", "drive letter"),
    ("case\\..\\..\\evil_t1.nii.gz", "backslash"),
])
def test_zip_members_with_unsafe_names_are_rejected(
    tmp_path: Path, client: TestClient, case: CaseFiles, member: str, reason: str
) -> None:
    members = [(f"{case.case_id}/{p.name}", p.read_bytes()) for p in case_paths(case)]
    response = upload_zip(client, zip_bytes([*members, (member, case.images["t1"].read_bytes())]))
    assert_rejected(response, 422, reason)
    assert files_outside(tmp_path, tmp_path / "data") == set()
    assert list((tmp_path / "data").iterdir()) == []


def test_zip_symlink_member_is_rejected(tmp_path: Path, client: TestClient, case: CaseFiles) -> None:
    link = zipfile.ZipInfo(f"{case.case_id}/{case.case_id}_flair.nii.gz")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    members = [(f"{case.case_id}/{p.name}", p.read_bytes()) for p in case_paths(case) if "flair" not in p.name]
    with zipfile.ZipFile(path := tmp_path / "link.zip", "w") as archive:
        for name, payload in members:
            archive.writestr(name, payload)
        archive.writestr(link, "../../../../etc/passwd")
    assert_rejected(upload_zip(client, path.read_bytes()), 422, "symbolic link")
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("name", ["../../x_t1.nii.gz", "/etc/x_t1.nii.gz", "C:\\Windows\\x_t1.nii.gz",
                                  "..\\..\\x_t1.nii.gz", "sub/dir/x_t1.nii.gz", ".x_t1.nii.gz"])
def test_client_file_names_are_reduced_to_a_safe_basename(name: str) -> None:
    assert safe_name(name) == "x_t1.nii.gz"


def test_client_file_names_with_traversal_stay_inside_the_upload(
    tmp_path: Path, client: TestClient, case: CaseFiles
) -> None:
    hostile = {"t1": "../../../evil_t1.nii.gz", "t1ce": "/etc/evil_t1ce.nii.gz",
               "t2": "C:\\Windows\\evil_t2.nii.gz", "flair": "..\\..\\evil_flair.nii.gz"}
    files = [("files", (hostile[m], case.images[m].read_bytes(), "application/gzip")) for m in hostile]
    response = client.post("/upload", files=files)
    assert response.status_code == 201, response.text
    assert response.json()["cases"][0]["case_id"] == "evil"
    upload_dir = tmp_path / "data" / response.json()["upload_id"]
    assert sorted(p.name for p in (upload_dir / "files" / "evil").iterdir()) == sorted(
        f"evil_{m}.nii.gz" for m in hostile)
    assert files_outside(tmp_path, tmp_path / "data") == set()
    for name in ("..", "...", "/", "\\"):
        assert_rejected(client.post("/upload", files=[("files", (name, b"x"))]), 422, "name")


# -------------------------------------------------------------------------------------------- size limits
def test_declared_body_over_the_limit_is_refused_before_reading(tmp_path: Path, case: CaseFiles) -> None:
    with make_client(tmp_path, max_request_bytes=100_000) as client:
        assert_rejected(client.post("/upload", files=multipart(case_paths(case))), 413, "limit")
        assert_rejected(client.post("/predict", json={"upload_id": "x" * 200_000}), 413, "limit")
        assert client.get("/").status_code == 200


def test_json_predict_body_has_its_own_small_limit(client: TestClient) -> None:
    """``max_request_bytes`` is sized for uploads; a JSON request is three short strings."""
    assert_rejected(client.post("/predict", json={"upload_id": "x" * 100_000}), 413, "JSON body", "limit")


def test_streamed_body_over_the_limit_is_cut_off(tmp_path: Path) -> None:
    def chunks():
        for _ in range(8):
            yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.zip\"\r\n\r\n" + b"\0" * 65536

    with make_client(tmp_path, max_request_bytes=200_000) as client:
        response = client.post("/upload", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert "content-length" not in response.request.headers
        assert_rejected(response, 413, "limit")
    assert list((tmp_path / "data").iterdir()) == []


def test_body_limit_stops_reading_at_the_limit() -> None:
    """The middleware pulls no more than the limit from the client, even without a Content-Length."""
    pulled, sent = 0, []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": pulled < 1000}

    async def reads_everything(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/upload", "headers": []}
    anyio.run(BodySizeLimit(reads_everything, max_bytes=5000), scope, receive, send)
    assert pulled == 6 and sent[0]["status"] == 413


def test_zip_limits(tmp_path: Path, case: CaseFiles, other_case: CaseFiles) -> None:
    with make_client(tmp_path, max_zip_members=4) as client:
        assert_rejected(upload_zip(client, case_zip([case])), 422, "at most 4")
    with make_client(tmp_path, max_uncompressed_bytes=50_000) as client:
        assert_rejected(upload_zip(client, case_zip([case])), 422, "uncompressed")
    with make_client(tmp_path, max_cases_per_upload=1) as client:  # members: at most 1 case x 5 files
        assert_rejected(upload_zip(client, case_zip([case, other_case])), 422, "10 files; at most 5")
    with make_client(tmp_path, max_cases_per_upload=1, max_members_per_case=10) as client:
        assert_rejected(upload_zip(client, case_zip([case, other_case])), 422, "at most 1 per upload")
    with make_client(tmp_path) as client:
        bomb = zip_bytes([("bomb/bomb_t1.nii", b"\0" * (20 << 20))], compression=zipfile.ZIP_DEFLATED)
        assert len(bomb) < 100_000
        assert_rejected(upload_zip(client, bomb), 422, "zip bomb")
        six = multipart(case_paths(case)) + [("files", ("extra_t1.nii.gz", b"x"))]
        assert_rejected(client.post("/upload", files=six), 422, "at most 5")
        assert client.get("/").status_code == 200
    assert list((tmp_path / "data").iterdir()) == []


# ------------------------------------------------------------------------------------------------ bad files
def _bad_uploads(case: CaseFiles, tmp: Path) -> dict[str, tuple[list, str]]:
    """Upload ``files=`` lists that must be refused with 422, and a word the detail must contain."""
    files = {m: p.read_bytes() for m, p in case.images.items()}
    seg = case.seg.read_bytes()
    cid = case.case_id

    def loose(**replace: bytes) -> list:
        parts = {f"{cid}_{m}.nii.gz": data for m, data in files.items()}
        parts.update(replace)
        return [("files", (name, data)) for name, data in parts.items()]

    small = make_synthetic_case(cid, shape=(48, 48, 30), seed=5)
    other_shape = write_case(small, tmp / "small").images["flair"].read_bytes()
    bad_labels = make_synthetic_case(cid, shape=(48, 48, 32), seed=0)
    bad_labels.seg[bad_labels.seg == 4] = 3
    three = write_case(bad_labels, tmp / "labels").seg.read_bytes()
    valid_zip = case_zip([case])
    return {
        "non-NIfTI zip member": ([("files", ("c.zip", zip_bytes([(f"{cid}/{cid}_{m}.nii.gz", d) for m, d in files.items()]
                                                                 + [(f"{cid}/notes.txt", b"hello")])))], "not a NIfTI"),
        "empty zip": ([("files", ("c.zip", zip_bytes([])))], "the upload: no NIfTI files"),
        "nested zip": ([("files", ("c.zip", zip_bytes([("inner.zip", valid_zip)])))], "not a NIfTI"),
        "corrupt zip": ([("files", ("c.zip", b"PK\x03\x04" + b"garbage" * 100))], "not a valid zip"),
        "truncated zip": ([("files", ("c.zip", valid_zip[: len(valid_zip) // 2]))], "zip"),
        "not a NIfTI file": ([("files", ("notes.txt", b"hello"))], "neither a .zip nor a NIfTI"),
        "corrupt NIfTI": (loose(**{f"{cid}_t1.nii.gz": b"\x1f\x8b" + b"\xff" * 500}), f"{cid}_t1.nii.gz"),
        "truncated NIfTI": (loose(**{f"{cid}_t2.nii.gz": files["t2"][: len(files["t2"]) // 2]}), "truncated"),
        "plain text named .nii.gz": (loose(**{f"{cid}_t1ce.nii.gz": b"hello world"}), f"{cid}_t1ce.nii.gz"),
        "empty NIfTI": (loose(**{f"{cid}_flair.nii.gz": b""}), f"{cid}_flair.nii.gz"),
        "missing modality": (loose()[:3], "missing modality flair"),
        "mismatched shapes": (loose(**{f"{cid}_flair.nii.gz": other_shape}), "shape"),
        "bad seg labels": (loose(**{f"{cid}_seg.nii.gz": three}), "labels"),
        "unrecognised file": (loose(**{"brain.nii.gz": seg}), "not part of any case"),
        "duplicate modality": (loose(**{f"{cid}_t1n.nii.gz": files["t1"]}), "two files"),
        "two zips": ([("files", ("a.zip", valid_zip)), ("files", ("b.zip", valid_zip))], "one .zip"),
        "zip and NIfTI": ([("files", ("a.zip", valid_zip)), *loose()[:1]], "one .zip"),
    }


def test_bad_files_get_422_with_a_useful_detail(tmp_path: Path, client: TestClient, case: CaseFiles) -> None:
    for label, (files, word) in _bad_uploads(case, tmp_path / "bad").items():
        response = client.post("/upload", files=files)
        assert response.status_code == 422, (label, response.text)
        detail = response.json()["detail"]
        assert word.lower() in detail.lower(), (label, detail)
        assert str(tmp_path) not in detail, ("server paths leak", label, detail)
        one_shot = client.post("/predict", files=files)
        assert one_shot.status_code in (400, 422), (label, one_shot.text)
    assert list((tmp_path / "data").iterdir()) == []
    assert client.get("/").status_code == 200


def test_malformed_requests_get_4xx(client: TestClient) -> None:
    assert client.post("/upload").status_code == 422
    assert client.post("/upload", json={"files": []}).status_code == 422
    assert_rejected(client.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"}), 400,
                    "not valid JSON")  # as README says
    assert client.post("/predict", json={}).status_code == 422
    assert client.post("/predict", json={"upload_id": str(uuid.uuid4()), "extra": 1}).status_code == 422
    assert client.post("/predict", json=[1, 2]).status_code == 422
    assert_rejected(client.post("/predict", content=b"x", headers={"Content-Type": "text/plain"}), 415, "JSON")
    assert client.post("/predict", files=[("model", (None, b"sspp"))]).status_code == 422
    malformed = b"--b\r\n[]--b--\r\n"  # found by the fuzzer: python-multipart's own parse error
    for path in ("/predict", "/upload"):
        response = client.post(path, content=malformed, headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert response.status_code == 400, (path, response.text)


# ---------------------------------------------------------------------------------------- ids and isolation
def test_unknown_or_malformed_ids_get_404(client: TestClient, case: CaseFiles) -> None:
    real = client.post("/upload", files=multipart(case_paths(case))).json()["upload_id"]
    ids = [str(uuid.uuid4()), "1", "not-an-id", str(uuid.uuid1()), real.upper(), "...", "%2e%2e%2fetc"]
    for bad in ids:
        for method, path in (("GET", f"/uploads/{bad}"), ("DELETE", f"/uploads/{bad}"),
                             ("GET", f"/predictions/{bad}"), ("GET", f"/predictions/{bad}/segmentation"),
                             ("GET", f"/predictions/{bad}/overlay")):
            response = client.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
        assert client.post("/predict", json={"upload_id": bad}).status_code == 404


def test_ids_are_random_uuid4_and_uploads_are_isolated(
    client: TestClient, case: CaseFiles, other_case: CaseFiles
) -> None:
    first = client.post("/upload", files=multipart(case_paths(case))).json()
    second = client.post("/upload", files=multipart(case_paths(other_case))).json()
    ids = [first["upload_id"], second["upload_id"]]
    assert all(uuid.UUID(i).version == 4 for i in ids) and ids[0] != ids[1]
    assert [c["case_id"] for c in client.get(f"/uploads/{ids[0]}").json()["cases"]] == [case.case_id]
    crossed = client.post("/predict", json={"upload_id": ids[0], "case_id": other_case.case_id})
    assert crossed.status_code == 404
    first_prediction = client.post("/predict", json={"upload_id": ids[0]}).json()
    second_prediction = client.post("/predict", json={"upload_id": ids[1]}).json()
    assert uuid.UUID(first_prediction["prediction_id"]).version == 4
    assert (first_prediction["case_id"], second_prediction["case_id"]) == (case.case_id, other_case.case_id)


# --------------------------------------------------------------------------------------- unexpected errors
def test_unexpected_errors_are_a_500_without_details(tmp_path: Path, case: CaseFiles) -> None:
    with make_client(tmp_path, Broken()) as client:
        upload_id = client.post("/upload", files=multipart(case_paths(case))).json()["upload_id"]
        response = client.post("/predict", json={"upload_id": upload_id})
        assert response.status_code == 500 and response.json() == {"detail": "internal server error"}
        assert client.get("/").status_code == 200
        assert client.get(f"/uploads/{upload_id}").status_code == 200


def test_no_pickle_in_the_service() -> None:
    for path in (REPO_ROOT / "sspp_unet_api").rglob("*.py"):
        source = path.read_text()
        for word in ("import pickle", "joblib", "allow_pickle=True", "weights_only=False"):
            assert word not in source, (path, word)

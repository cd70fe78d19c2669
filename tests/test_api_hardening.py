"""The hardening checked in-process: HEAD /, security headers, capped echoes, foreign origins, voxel
bounds, offline docs pages. The points that live in the server are in ``test_api_server.py``."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from api_support import api_settings, multipart, zero_volume_gz
from fastapi.testclient import TestClient
from support import Oracle, case_paths, zip_bytes

from brats_core.cases import CaseFiles, find_cases
from brats_core.config import REPO_ROOT
from sspp_unet_api.app.main import create_app

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def case(synthetic_root: Path) -> CaseFiles:
    return find_cases(synthetic_root)[0]


def make_client(tmp_path: Path, **overrides) -> TestClient:
    settings = api_settings(tmp_path / "data", tmp_path / "unused.pt", **overrides)
    return TestClient(create_app(settings, Oracle()), raise_server_exceptions=False)


@pytest.fixture()
def client(tmp_path: Path):
    with make_client(tmp_path) as test_client:
        yield test_client


def uploads(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "data").iterdir())


# ---------------------------------------------------------------------------------------------- small points
def test_head_on_health_answers_200_without_the_key(tmp_path: Path) -> None:
    with make_client(tmp_path, api_key=KEY) as client:
        response = client.head("/")
        assert response.status_code == 200 and response.content == b""


def test_readme_promises_400_for_a_malformed_body(client: TestClient) -> None:
    assert "400 malformed body" in (REPO_ROOT / "sspp_unet_api" / "README.md").read_text()
    response = client.post("/predict", content=b'{"upload_id": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["detail"]


def test_a_multipart_body_cut_before_its_closing_boundary_gets_400(client: TestClient, tmp_path: Path) -> None:
    body = b'--XB\r\nContent-Disposition: form-data; name="files"; filename="c_t1.nii.gz"\r\n\r\nhalf a file'
    response = client.post("/upload", content=body, headers={"Content-Type": "multipart/form-data; boundary=XB"})
    assert response.status_code == 400 and "ends before its closing boundary" in response.json()["detail"]
    assert uploads(tmp_path) == []


def test_form_fields_are_named_or_refused(client: TestClient, tmp_path: Path, case: CaseFiles) -> None:
    files = multipart(case_paths(case))
    refused = client.post("/upload", files=files, data={"other": "x"})
    assert refused.status_code == 422
    assert refused.json()["detail"] == ("unexpected form field 'other': this endpoint takes files in the field "
                                        "'files'")
    refused = client.post("/predict", files=files, data={"foo": "1"})
    assert refused.status_code == 422 and "unexpected form field 'foo': this endpoint takes the text fields " \
        "case_id, model, tta and files in the field 'files'" in refused.json()["detail"]
    twice = client.post("/predict", files=[*files, ("tta", (None, b"true")), ("tta", (None, b"false"))])
    assert twice.status_code == 422 and "form field 'tta' sent twice" in twice.json()["detail"]
    assert uploads(tmp_path) == []
    assert client.post("/predict", files=files, data={"case_id": case.case_id, "tta": "false"}).status_code == 200


def test_security_headers(client: TestClient, case: CaseFiles) -> None:
    uploaded = client.post("/upload", files=multipart(case_paths(case)))
    prediction = client.post("/predict", json={"upload_id": uploaded.json()["upload_id"]}).json()
    results = [uploaded, client.get(f"/uploads/{prediction['upload_id']}"), client.get(prediction["urls"]["overlay"]),
               client.get(f"/predictions/{prediction['prediction_id']}"), client.get(prediction["urls"]["segmentation"]),
               client.post("/predict", json={"upload_id": prediction["upload_id"]}), client.get("/"),
               client.get(f"/uploads/{uuid.uuid4()}")]
    for response in results:
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store", response.url
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.headers["content-type"].startswith("text/html")
        csp = html.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert html.headers["x-frame-options"] == "DENY" and html.headers["cache-control"] == "no-store"
    asset = client.get("/docs-assets/swagger-ui.css")
    assert asset.status_code == 200 and "no-store" not in asset.headers.get("cache-control", "")


def test_echoed_ids_are_capped(client: TestClient, case: CaseFiles) -> None:
    long_id = "x" * 60_000
    upload_id = client.post("/upload", files=multipart(case_paths(case))).json()["upload_id"]
    responses = [
        client.post("/predict", json={"upload_id": long_id}),
        client.get(f"/uploads/{'y' * 8000}"),
        client.get(f"/predictions/{'z' * 8000}"),
        client.post("/predict", json={"upload_id": upload_id, "case_id": long_id}),
        client.post("/predict", json={"upload_id": upload_id, "model": long_id}),
        client.post("/predict", json={"upload_id": [long_id]}),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500, response.text[:200]
        assert len(response.content) < 1000, (response.status_code, response.text[:300])


# -------------------------------------------------------------------------------------------- foreign origins
def test_state_changing_requests_from_foreign_origins_are_refused(tmp_path: Path, case: CaseFiles) -> None:
    with make_client(tmp_path, cors_origins=("https://ui.example.org",)) as client:
        for origin in ("https://evil.example", "null", "http://testserver.evil.example"):
            refused = client.post("/upload", files=multipart(case_paths(case)), headers={"Origin": origin})
            assert refused.status_code == 403 and "BRATS_CORS_ORIGINS" in refused.json()["detail"], origin
            one_shot = client.post("/predict", files=multipart(case_paths(case)), headers={"Origin": origin})
            assert one_shot.status_code == 403
        assert uploads(tmp_path) == []
        own = client.post("/upload", files=multipart(case_paths(case)), headers={"Origin": "http://testserver"})
        assert own.status_code == 201, own.text
        upload_id = own.json()["upload_id"]
        configured = client.post("/predict", json={"upload_id": upload_id}, headers={"Origin": "https://ui.example.org"})
        assert configured.status_code == 200
        assert client.get(f"/uploads/{upload_id}", headers={"Origin": "https://evil.example"}).status_code == 200
        assert client.delete(f"/uploads/{upload_id}", headers={"Origin": "https://evil.example"}).status_code == 403
        assert client.post("/upload", files=multipart(case_paths(case))).status_code == 201  # no Origin: curl


# ---------------------------------------------------------------------------------------------- voxel bounds
def test_voxels_are_bounded_per_volume_from_the_headers(client: TestClient, tmp_path: Path) -> None:
    """Four 400^3 zero volumes (~0.5 MB compressed, 2 GB as float32) are refused without being decompressed."""
    volume = zero_volume_gz((400, 400, 400))
    files = [("files", (f"big_{m}.nii.gz", volume)) for m in ("t1", "t1ce", "t2", "flair")]
    started = time.perf_counter()
    response = client.post("/upload", files=files)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "big_t1.nii.gz" in detail and "400x400x400" in detail and "BRATS_MAX_VOXELS_PER_VOLUME" in detail
    assert time.perf_counter() - started < 5.0
    assert uploads(tmp_path) == []


def test_voxels_are_bounded_per_case(tmp_path: Path, case: CaseFiles) -> None:
    voxels = int(np.prod(nib.load(case.images["t1"]).shape))
    with make_client(tmp_path, max_voxels_per_case=4 * voxels) as client:
        assert client.post("/upload", files=multipart(case_paths(case)[:4])).status_code == 201
        refused = client.post("/upload", files=multipart(case_paths(case)))  # + seg: 5 volumes
        assert refused.status_code == 422
        assert f"case '{case.case_id}'" in refused.json()["detail"] and "BRATS_MAX_VOXELS_PER_CASE" in refused.text
    with make_client(tmp_path, max_voxels_per_volume=voxels - 1) as client:
        assert "BRATS_MAX_VOXELS_PER_VOLUME" in client.post("/upload", files=multipart(case_paths(case))).text


# ------------------------------------------------------------------------------------------ offline docs pages
def test_docs_pages_name_no_external_url(client: TestClient) -> None:
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        html = client.get(page)
        assert html.status_code == 200
        assert not re.search(r"(https?:)?//[a-z0-9]", html.text, re.IGNORECASE), (page, html.text)
        for asset in re.findall(r'(?:src|href)="([^"]+)"', html.text):
            fetched = client.get(asset)
            assert fetched.status_code == 200 and len(fetched.content) > 1000, asset


# ------------------------------------------------------------------------------------- names too long to hold
@pytest.mark.parametrize(("member", "words"), [
    ("c/" + "L" * 250 + "_t1.nii.gz", ("260 bytes", "at most 255")),
    ("/".join(["d" * 200] * 6) + "/c_t1.nii.gz", ("more than 1024 bytes",)),
])
def test_zip_member_names_the_file_system_cannot_hold_get_422(
    client: TestClient, tmp_path: Path, case: CaseFiles, member: str, words: tuple[str, ...]
) -> None:
    members = [(f"{case.case_id}/{p.name}", p.read_bytes()) for p in case_paths(case)]
    archive = zip_bytes([*members, (member, case.images["t1"].read_bytes())])
    response = client.post("/upload", files=[("files", ("long.zip", archive, "application/zip"))])
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "long.zip" in detail and all(w in detail for w in words) and len(detail) < 400, detail
    assert str(tmp_path) not in detail and uploads(tmp_path) == []
    assert client.get("/").status_code == 200


def test_cleanup_of_a_partial_extraction_never_raises(tmp_path: Path) -> None:
    """Removing what was extracted must not fail, even on paths the file system refuses."""
    from brats_core.archive import _remove

    kept = tmp_path / "kept.nii.gz"
    kept.write_bytes(b"x")
    _remove([tmp_path / ("L" * 300), tmp_path / "missing", kept])
    assert not kept.exists()


# ------------------------------------------------------------------------------------------------ memory
def test_memory_is_released_after_each_task_even_on_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from sspp_unet_api.app import memory

    assert memory.configure_allocator(True) is True  # glibc takes the arena cap (Linux)
    released: list[int] = []
    monkeypatch.setattr(memory, "release_memory", lambda: released.append(1))

    def fails() -> None:
        raise RuntimeError("boom")

    assert memory.trimmed(lambda x: x + 1)(1) == 2
    with pytest.raises(RuntimeError):
        memory.trimmed(fails)()
    assert released == [1, 1]


def test_release_memory_can_be_turned_off(tmp_path: Path) -> None:
    from sspp_unet_api.app import memory
    from sspp_unet_api.app.config import Settings

    assert Settings.from_env({"BRATS_RELEASE_MEMORY": "0"}).release_memory is False
    assert memory.configure_allocator(False) is False and memory._enabled is False
    memory.configure_allocator(True)
    with pytest.raises(Exception, match="BRATS_RELEASE_MEMORY"):
        Settings.from_env({"BRATS_RELEASE_MEMORY": "maybe"})


def test_brats_serve_refuses_zero_workers(capsys: pytest.CaptureFixture[str]) -> None:
    from sspp_unet_api.app.main import main

    assert main(["--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err

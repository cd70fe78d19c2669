"""Several server processes on one storage folder, and the storage folder's life across starts and stops.

``brats serve --workers 2`` and two replicas on their own ports (as behind a load balancer) share one
``BRATS_DATA_DIR``: an upload made on one is predicted and downloaded on the other. Expired uploads are swept
at start-up; with ``BRATS_PURGE_ON_EXIT`` (what ``make demo`` sets) a clean shutdown deletes every upload.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import nibabel as nib
import pytest
from api_support import Server, children, multipart, wait_until
from streamlit_support import Demo
from support import case_paths

from brats_core.cases import CaseFiles, find_cases


@pytest.fixture(scope="module")
def cases(synthetic_root: Path) -> list[CaseFiles]:
    return find_cases(synthetic_root)


def round_trip(upload_on: str, predict_on: str, case: CaseFiles, tmp: Path) -> None:
    """Upload on one server, list, predict and download on the other, fresh connection for each request."""
    fresh = {"Connection": "close"}
    uploaded = httpx.post(f"{upload_on}/upload", files=multipart(case_paths(case)), headers=fresh, timeout=60)
    assert uploaded.status_code == 201, uploaded.text
    upload_id = uploaded.json()["upload_id"]
    assert httpx.get(f"{predict_on}/uploads/{upload_id}", headers=fresh).json()["cases"][0]["case_id"] == case.case_id
    predicted = httpx.post(f"{predict_on}/predict", json={"upload_id": upload_id}, headers=fresh, timeout=60)
    assert predicted.status_code == 200, predicted.text
    prediction_id = predicted.json()["prediction_id"]
    seg = httpx.get(f"{upload_on}/predictions/{prediction_id}/segmentation", headers=fresh)
    assert seg.status_code == 200
    (path := tmp / f"{prediction_id}.nii.gz").write_bytes(seg.content)
    assert nib.load(path).shape == tuple(predicted.json()["shape"])
    assert httpx.get(f"{upload_on}/predictions/{prediction_id}/overlay", headers=fresh).status_code == 200
    assert httpx.delete(f"{predict_on}/uploads/{upload_id}", headers=fresh).status_code == 204
    assert httpx.get(f"{upload_on}/uploads/{upload_id}", headers=fresh).status_code == 404


@pytest.mark.slow
def test_two_replicas_on_one_storage_folder_serve_each_others_uploads(
    server_factory, tmp_path: Path, cases: list[CaseFiles]
) -> None:
    first = server_factory(data=tmp_path / "shared")
    second = server_factory(data=tmp_path / "shared")
    round_trip(first.url, second.url, cases[0], tmp_path)
    round_trip(second.url, first.url, cases[1], tmp_path)


@pytest.mark.slow
def test_brats_serve_with_two_workers(server_factory, tmp_path: Path, cases: list[CaseFiles]) -> None:
    server = server_factory(extra=["--workers", "2"])
    assert wait_until(lambda: len(children(server.process.pid)) >= 2, 60), "uvicorn did not start 2 workers"
    workers = [pid for pid in children(server.process.pid)
               if "multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
               or Path(f"/proc/{pid}/cmdline").read_bytes().count(b"\0") > 1]
    assert len(workers) >= 2, workers
    for index in range(4):  # every request on a new connection, so that both workers take part
        round_trip(server.url, server.url, cases[index % len(cases)], tmp_path)
    assert "Started parent process" in server.log.read_text()


# ---------------------------------------------------------------------------------- the storage's lifetime
def _expired_upload(data: Path) -> Path:
    folder = data / str(uuid.uuid4())
    (folder / "files").mkdir(parents=True)
    (folder / "files" / "x_t1.nii.gz").write_bytes(b"\0" * 1000)
    record = {"upload_id": folder.name, "created_at": time.time() - 7200, "expires_at": time.time() - 3600,
              "cases": []}
    (folder / "upload.json").write_text(json.dumps(record))
    return folder


def test_expired_uploads_are_swept_at_start_up(server_factory, tmp_path: Path) -> None:
    expired = _expired_upload(tmp_path / "data")
    server = server_factory(cleanup_interval_seconds="3600")
    assert not expired.exists() and server.uploads() == []


def test_purge_on_exit_deletes_the_uploads_at_a_clean_shutdown(
    tmp_path: Path, random_export: Path, cases: list[CaseFiles]
) -> None:
    server = Server(tmp_path, random_export, purge_on_exit="1")
    try:
        uploaded = httpx.post(f"{server.url}/upload", files=multipart(case_paths(cases[0])), timeout=60)
        assert uploaded.status_code == 201 and len(server.uploads()) == 1
    finally:
        assert server.stop(), server.log.read_text()
    assert server.uploads() == [] and "deleted 1 upload(s) at shutdown" in server.log.read_text()


@pytest.mark.slow
def test_the_demo_deletes_its_uploads_when_it_stops(random_export: Path, tmp_path: Path,
                                                     cases: list[CaseFiles]) -> None:
    stack = Demo(random_export, tmp_path / "api")
    try:
        uploaded = httpx.post(f"{stack.api_url}/upload", files=multipart(case_paths(cases[0])), timeout=60)
        assert uploaded.status_code == 201
        assert (tmp_path / "api" / uploaded.json()["upload_id"]).is_dir()
    finally:
        assert stack.stop() == 0, stack.output()
    assert [p for p in (tmp_path / "api").iterdir() if p.is_dir()] == []

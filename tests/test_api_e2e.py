"""The API as a real uvicorn process on a loopback port, driven over HTTP with httpx.

One test runs the bundled sample case end to end (with the shipped checkpoint when it exists, else a tiny
random export); another has 8 clients make 3 predictions each at once and checks nobody sees another's data.
"""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from api_support import SAMPLE_ZIP, SHIPPED_CHECKPOINT, multipart, serve, stop
from support import case_paths

from brats_core.cases import CaseFiles
from brats_core.config import REGIONS
from brats_core.synth import make_synthetic_case, write_case

CLIENTS, PREDICTIONS_PER_CLIENT = 8, 3


def run_server(tmp: Path, checkpoint: Path, **env: str):
    environment = {"BRATS_CHECKPOINT": str(checkpoint), "BRATS_DATA_DIR": str(tmp / "data"), "BRATS_DEVICE": "cpu",
                   **{f"BRATS_{k.upper()}": v for k, v in env.items()}}
    return serve(environment, tmp / "server.log")


@pytest.mark.real_data
@pytest.mark.slow
def test_sample_case_end_to_end(tmp_path: Path, random_export: Path) -> None:
    checkpoint = SHIPPED_CHECKPOINT if SHIPPED_CHECKPOINT.is_file() else random_export
    process, url = run_server(tmp_path, checkpoint)
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            health = client.get("/").json()
            assert health["checkpoint"] == checkpoint.name and health["device"] == "cpu"
            sample = client.get("/download_sample")
            assert sample.status_code == 200 and sample.content == SAMPLE_ZIP.read_bytes()
            uploaded = client.post("/upload", files=[("files", ("sample_case.zip", sample.content, "application/zip"))])
            assert uploaded.status_code == 201, uploaded.text
            (case,) = uploaded.json()["cases"]
            assert case["shape"] == [240, 240, 155] and case["has_segmentation"]
            prediction = client.post("/predict", json={"upload_id": uploaded.json()["upload_id"]})
            assert prediction.status_code == 200, prediction.text
            body = prediction.json()
            assert set(body["metrics"]) == set(REGIONS)
            assert all(0.0 <= body["metrics"][r]["dice"] <= 1.0 for r in REGIONS)
            seg = client.get(body["urls"]["segmentation"])
            assert seg.status_code == 200
            (tmp_path / "pred.nii.gz").write_bytes(seg.content)
            predicted = nib.load(tmp_path / "pred.nii.gz")
            with zipfile.ZipFile(io.BytesIO(sample.content)) as archive:
                member = next(n for n in archive.namelist() if n.endswith("_t1.nii.gz"))
                (tmp_path / "t1.nii.gz").write_bytes(archive.read(member))
            labels = np.asanyarray(predicted.dataobj)
            assert labels.shape == (240, 240, 155)
            assert np.allclose(predicted.affine, nib.load(tmp_path / "t1.nii.gz").affine)
            assert set(np.unique(labels)) <= {0, 1, 2, 4}
            assert body["volumes_ml"]["WT"] == round(np.isin(labels, REGIONS["WT"]).sum() / 1000.0, 1)
            overlay = client.get(body["urls"]["overlay"], params={"axis": "axial"})
            assert overlay.status_code == 200 and overlay.content.startswith(b"\x89PNG")
            assert client.delete(f"/uploads/{body['upload_id']}").status_code == 204
            print(f"sample case with {checkpoint}: Dice {({r: round(m['dice'], 3) for r, m in body['metrics'].items()})}, "
                  f"{body['runtime_seconds']:.2f} s")
    finally:
        assert stop(process, tmp_path / "server.log"), (tmp_path / "server.log").read_text()


@pytest.fixture(scope="module")
def client_cases(tmp_path_factory: pytest.TempPathFactory) -> list[CaseFiles]:
    """One case per client, each with its own id and its own depth so that results cannot be confused."""
    root = tmp_path_factory.mktemp("clients")
    return [write_case(make_synthetic_case(f"client_{i}", shape=(48, 48, 24 + i), seed=i), root)
            for i in range(CLIENTS)]


@pytest.mark.slow
def test_concurrent_clients_get_their_own_results(
    tmp_path: Path, random_export: Path, client_cases: list[CaseFiles]
) -> None:
    process, url = run_server(tmp_path, random_export, max_concurrent_inferences="2",
                              queue_timeout_seconds="60")

    def client_session(index: int) -> list[str]:
        own, other = client_cases[index], client_cases[(index + 1) % CLIENTS]
        errors = []
        with httpx.Client(base_url=url, timeout=60) as client:
            uploaded = client.post("/upload", files=multipart(case_paths(own)))
            if uploaded.status_code != 201:
                return [f"client {index}: upload {uploaded.status_code} {uploaded.text}"]
            upload_id = uploaded.json()["upload_id"]
            for _ in range(PREDICTIONS_PER_CLIENT):
                response = client.post("/predict", json={"upload_id": upload_id})
                body = response.json()
                if response.status_code != 200 or body["case_id"] != own.case_id or body["shape"][2] != 24 + index:
                    errors.append(f"client {index}: predict {response.status_code} {body}")
                    continue
                seg = client.get(body["urls"]["segmentation"])
                (tmp_path / f"{index}.nii.gz").write_bytes(seg.content)
                if nib.load(tmp_path / f"{index}.nii.gz").shape != (48, 48, 24 + index):
                    errors.append(f"client {index}: segmentation of the wrong case")
            listed = [c["case_id"] for c in client.get(f"/uploads/{upload_id}").json()["cases"]]
            if listed != [own.case_id]:
                errors.append(f"client {index}: upload lists {listed}")
            crossed = client.post("/predict", json={"upload_id": upload_id, "case_id": other.case_id})
            if crossed.status_code != 404:
                errors.append(f"client {index}: another upload's case answered {crossed.status_code}")
            if client.get(f"/uploads/{uuid.uuid4()}").status_code != 404:
                errors.append(f"client {index}: a random upload id was found")
        return errors

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            errors = [e for result in pool.map(client_session, range(CLIENTS)) for e in result]
        elapsed = time.perf_counter() - start
        print(f"{CLIENTS} clients x {PREDICTIONS_PER_CLIENT} predictions: {elapsed:.1f} s")
        assert errors == []
        assert elapsed < 60, f"{CLIENTS} x {PREDICTIONS_PER_CLIENT} predictions took {elapsed:.1f} s"
        assert httpx.get(url + "/").json()["active_inferences"] == 0
    finally:
        assert stop(process, tmp_path / "server.log"), (tmp_path / "server.log").read_text()

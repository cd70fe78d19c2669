"""Helpers of the API tests and the API benchmark: settings, multipart bodies, a real uvicorn server.

The test segmenter and the case zips live in :mod:`support`, shared with the UI tests.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np

from brats_app.registry import default_checkpoint
from brats_core.config import REPO_ROOT
from sspp_unet_api.app.config import SAMPLE_ZIP, Settings

SHIPPED_CHECKPOINT = default_checkpoint("sspp")
__all__ = ["SAMPLE_ZIP", "SHIPPED_CHECKPOINT", "Server", "api_settings", "benchmark_checkpoint", "children",
           "multipart", "sample_files", "serve", "stop", "upload_sample", "wait_until", "zero_volume_gz"]


def api_settings(data_dir: Path, checkpoint: Path, **overrides: object) -> Settings:
    """Settings for tests: CPU, the given sspp checkpoint, small limits where a test does not override them."""
    values: dict[str, object] = {"data_dir": data_dir, "checkpoints": {"sspp": checkpoint}, "device": "cpu",
                                 "queue_timeout_seconds": 10.0}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def zero_volume_gz(shape: tuple[int, int, int]) -> bytes:
    """A ``.nii.gz`` of zeros (int16): a few hundred KB for hundreds of MB of voxels."""
    image = nib.Nifti1Image(np.zeros(shape, dtype=np.int16), np.eye(4))
    return gzip.compress(image.to_bytes(), compresslevel=1)


def multipart(files: Iterable[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The ``files`` form field holding ``files`` (for httpx / TestClient ``files=``)."""
    return [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in files]


def benchmark_checkpoint(tmp: Path) -> tuple[Path, bool]:
    """The API benchmarks' model: (the shipped SSPP checkpoint, True) if present, else (a randomly initialised
    export of the default configuration, same architecture and cost, written in ``tmp``, False)."""
    if SHIPPED_CHECKPOINT.is_file():
        return SHIPPED_CHECKPOINT, True
    from Deep_Learning_Model.export import write_random_export
    from Deep_Learning_Model.model import ModelConfig

    return write_random_export(tmp / "sspp.pt", ModelConfig()), False


def sample_files() -> list[tuple[str, tuple[str, bytes]]]:
    """The bundled sample case as the ``files`` form field (httpx ``files=``)."""
    return [("files", ("sample_case.zip", SAMPLE_ZIP.read_bytes()))]


def upload_sample(client: httpx.Client) -> str:
    """``POST /upload`` of the bundled sample case; its upload id (raises on an error answer)."""
    uploaded = client.post("/upload", files=sample_files())
    uploaded.raise_for_status()
    return uploaded.json()["upload_id"]


def serve(env: dict[str, str], log: Path, timeout: float = 90.0,
          brats_serve: list[str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``uvicorn sspp_unet_api.app.main:app`` on a free loopback port; returns the process and base URL.

    With ``brats_serve`` (its extra options, e.g. ``["--workers", "2"]``), start ``brats serve`` instead
    (``python -m sspp_unet_api.app.main``), which applies the connection limits of the settings.
    The listening socket is bound here and handed to the server (``--fd``), so there is no port race.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    with open(log, "wb") as out:
        command = [sys.executable, "-m", "uvicorn", "sspp_unet_api.app.main:app", "--log-level", "info"]
        if brats_serve is not None:
            command = [sys.executable, "-m", "sspp_unet_api.app.main", *brats_serve]
        process = subprocess.Popen(
            [*command, "--fd", str(sock.fileno())],
            cwd=REPO_ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()],
        )
    sock.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/", timeout=2.0).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    stop(process, log)
    raise RuntimeError(f"uvicorn did not answer within {timeout} s:\n{log.read_text()}")


def stop(process: subprocess.Popen, log: Path) -> bool:
    """Ask the server to shut down (SIGTERM), killing it after 15 s; True if it shut down cleanly.

    Uvicorn re-raises the signal after a graceful shutdown, so the exit status is -SIGTERM either way: the log
    tells whether the lifespan's shutdown completed.
    """
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)
        return False
    text = log.read_text()
    return "Application shutdown complete." in text and "Traceback" not in text


class Server:
    """``brats serve`` (``python -m sspp_unet_api.app.main --fd``) with its own data and temporary folders."""

    def __init__(self, tmp: Path, export: Path, name: str = "server", extra: list[str] | None = None,
                 data: Path | None = None, **env: str) -> None:
        self.data, self.tmp, self.log = data or tmp / "data", tmp / f"{name}_tmp", tmp / f"{name}.log"
        self.tmp.mkdir()
        environment = {"BRATS_CHECKPOINT": str(export), "BRATS_DATA_DIR": str(self.data), "BRATS_DEVICE": "cpu",
                       "TMPDIR": str(self.tmp), **{f"BRATS_{k.upper()}": v for k, v in env.items()}}
        self.process, self.url = serve(environment, self.log, brats_serve=extra or [])
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> bool:
        return stop(self.process, self.log)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        return sock

    def uploads(self) -> list[Path]:
        return [p for p in self.data.iterdir() if p.is_dir()] if self.data.exists() else []

    def open_deleted_files(self) -> list[str]:
        """Files the server (and its workers) hold open although they were deleted."""
        pids = [self.process.pid, *children(self.process.pid)]
        found = []
        for pid in pids:
            fd_dir = Path(f"/proc/{pid}/fd")
            for fd in fd_dir.iterdir() if fd_dir.exists() else []:
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.endswith("(deleted)"):
                    found.append(target)
        return found


def children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def wait_until(condition: Callable[[], bool], seconds: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()

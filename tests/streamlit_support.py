"""Helpers of the UI tests: the real API on a loopback port, a fake segmenter, a tiny export, case zips."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import uvicorn

from brats_core.cases import Case
from brats_core.config import REPO_ROOT
from brats_core.synth import make_synthetic_case, write_case
from sspp_unet_api.app.config import Settings
from sspp_unet_api.app.main import create_app


class FakeSegmenter:
    """Predicts the true mask when the case has one (Dice 1), else a small cube; can be made to wait."""

    name = "sspp"
    device = "cpu"

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.hold = hold

    def predict(self, case: Case) -> np.ndarray:
        if self.hold is not None:
            self.hold.wait(60)
        if case.seg is not None:
            return case.seg.copy()
        labels = np.zeros(case.shape, dtype=np.uint8)
        x, y, z = (s // 2 for s in case.shape)
        labels[x - 4 : x + 4, y - 4 : y + 4, z - 3 : z + 3] = 2
        return labels


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CountingApp:
    """ASGI wrapper counting the HTTP requests per (method, path), to check that nothing is sent twice."""

    def __init__(self, app) -> None:
        self.app, self.requests = app, Counter()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            self.requests[(scope["method"], scope["path"])] += 1
        await self.app(scope, receive, send)


@contextmanager
def serve_api(settings: Settings, segmenter=None) -> Iterator[tuple[str, CountingApp]]:
    """Serve ``create_app(settings, segmenter)`` with uvicorn in a thread; yields (base URL, counting app)."""
    app = CountingApp(create_app(settings, segmenter))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)


def case_zip(case: Case, folder: Path) -> bytes:
    """The files of ``case`` (BraTS 2020 names, in a folder named after the case) as zip bytes."""
    files = write_case(case, folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in [*files.images.values(), files.seg]:
            if path is not None:
                archive.write(path, f"{case.case_id}/{path.name}")
    return buffer.getvalue()


def synthetic_zip(folder: Path, case_id: str = "synth_ui", shape=(48, 48, 32), seed: int = 3) -> Path:
    """A zip of one synthetic case written under ``folder``."""
    path = folder / f"{case_id}.zip"
    path.write_bytes(case_zip(make_synthetic_case(case_id, shape=shape, seed=seed), folder / "files"))
    return path


def tiny_export(path: Path) -> Path:
    """A randomly initialised U-Net + SSPP export of base width 8 (fast on a CPU, meaningless predictions)."""
    import torch

    from brats_core.config import PreprocessConfig
    from Deep_Learning_Model.export import save_export
    from Deep_Learning_Model.model import ModelConfig, build_model

    config = ModelConfig(base_width=8)
    torch.manual_seed(0)
    return save_export(
        path, build_model(config), config, PreprocessConfig(), {}, {"note": "tiny random test export"}
    )


class Demo:
    """``python -m streamlit_app.demo`` on free loopback ports, serving ``export``; stopped with SIGINT."""

    def __init__(self, export: Path, data_dir: Path, start_timeout: float = 180.0) -> None:
        self.api_port, self.ui_port = free_port(), free_port()
        self.api_url, self.ui_url = f"http://127.0.0.1:{self.api_port}", f"http://127.0.0.1:{self.ui_port}"
        env = dict(os.environ, BRATS_CHECKPOINT=str(export), BRATS_DATA_DIR=str(data_dir), BRATS_DEVICE="cpu")
        env.update(BRATS_API_KEY="", PYTHONUNBUFFERED="1")
        ports = ["--api-port", str(self.api_port), "--ui-port", str(self.ui_port)]
        command = [sys.executable, "-m", "streamlit_app.demo", *ports]
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(start_timeout):
            self.stop()
            raise AssertionError("demo did not become ready:\n" + self.output())

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if "Press Ctrl-C" in line:
                self._ready.set()
        self._ready.set()

    def output(self) -> str:
        return "".join(self.lines)

    def children(self) -> list[int]:
        """Process ids whose parent is the demo (from /proc)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                found.append(int(stat.parent.name))
        return found

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT (a Ctrl-C), then the exit code; killed if it does not exit within ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def is_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

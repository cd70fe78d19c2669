"""Helpers of the UI tests: the real API on a loopback port, a zip of a synthetic case, ``make demo``.

The test segmenter and the case zips come from :mod:`support`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from support import case_zip, free_port

from brats_core.config import REPO_ROOT
from brats_core.synth import make_synthetic_case, write_case
from sspp_unet_api.app.config import Settings
from sspp_unet_api.app.main import create_app


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


def synthetic_zip(folder: Path, case_id: str = "synth_ui", shape=(48, 48, 32), seed: int = 3) -> Path:
    """A zip of one synthetic case written under ``folder`` (BraTS 2020 names in a folder named after it)."""
    files = write_case(make_synthetic_case(case_id, shape=shape, seed=seed), folder / "files")
    path = folder / f"{case_id}.zip"
    path.write_bytes(case_zip([files]))
    return path


class Demo:
    """``python -m streamlit_app.demo`` on free loopback ports (passed as ``make demo`` passes them: the variables
    API_PORT and UI_PORT), serving ``export`` as sspp and ``unet_export`` as unet (default: the shipped U-Net
    checkpoint); stopped with SIGINT."""

    def __init__(
        self, export: Path, data_dir: Path, start_timeout: float = 180.0, unet_export: Path | None = None
    ) -> None:
        self.api_port, self.ui_port = free_port(), free_port()
        self.api_url, self.ui_url = f"http://127.0.0.1:{self.api_port}", f"http://127.0.0.1:{self.ui_port}"
        env = dict(os.environ, BRATS_CHECKPOINT=str(export), BRATS_DATA_DIR=str(data_dir), BRATS_DEVICE="cpu")
        env.update(BRATS_API_KEY="", PYTHONUNBUFFERED="1", API_PORT=str(self.api_port), UI_PORT=str(self.ui_port))
        env.pop("BRATS_ALLOWED_MODELS", None)
        if unet_export is not None:
            env["BRATS_CHECKPOINT_UNET"] = str(unet_export)
        command = [sys.executable, "-m", "streamlit_app.demo"]
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

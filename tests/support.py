"""Helpers shared by the API, UI and demo tests: a test segmenter, case zips, a free port.

Imported as a top-level module (``from support import Oracle``): tests/ is on ``sys.path`` under pytest.
"""

from __future__ import annotations

import io
import socket
import threading
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from brats_core.cases import Case, CaseFiles


class Oracle:
    """Test-only sspp segmenter: predicts the case's own seg (Dice 1), zeros without one.

    With ``hold``, each prediction first waits (up to 60 s) for the event, to keep an inference slot busy.
    """

    name = "sspp"
    device = "cpu"

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.hold = hold

    def predict(self, case: Case) -> np.ndarray:
        if self.hold is not None:
            self.hold.wait(60)
        return case.seg.copy() if case.seg is not None else np.zeros(case.shape, np.uint8)


def case_paths(files: CaseFiles) -> list[Path]:
    """The image files of a case, then its seg when it has one."""
    return [*files.images.values(), *([files.seg] if files.seg is not None else [])]


def zip_bytes(members: Iterable[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip archive holding ``(name, data)`` members, in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def case_zip(cases: Iterable[CaseFiles]) -> bytes:
    """A zip with one folder per case (``<case>/<file>``), as users send them."""
    return zip_bytes((f"{c.case_id}/{p.name}", p.read_bytes()) for c in cases for p in case_paths(c))


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

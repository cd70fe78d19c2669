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


def write_fusion_cv(out: Path) -> Path:
    """``<out>/fusion/cv`` as ``Deep_Learning_Model.cv score --model fusion`` leaves it (what ``brats train fusion
    --cv out`` reads): a 27-case summary, the post-processed one (Dice 0.01 higher, HD95 3 mm) and a tuning report
    of two synthetic out-of-fold label maps, each with a false blob the tuning removes. Returns ``out``."""
    import json

    from brats_core.config import REGIONS
    from brats_core.postprocess import tune_postprocess
    from brats_core.synth import make_synthetic_case
    from Deep_Learning_Model.serialization import plain_data

    cases = []
    for seed in (1, 2):
        ref = make_synthetic_case(f"c{seed}", shape=(40, 40, 24), seed=seed).seg
        pred = ref.copy()
        pred[:3, :3, :3] = 2
        cases.append((pred, ref, (1.0, 1.0, 1.0)))
    _, report = tune_postprocess(cases, folds=[1, 2])
    summary = {r: {"dice": {"mean": 0.9 - 0.1 * i, "sd": 0.1, "median": 0.9}, "hd95": {"mean": 5.0 + i, "sd": 2.0}}
               for i, r in enumerate(REGIONS)}
    cv = out / "fusion" / "cv"
    cv.mkdir(parents=True)
    (cv / "summary.json").write_text(json.dumps({"n_cases": 27, **summary}))
    post = {r: {"dice": {**s["dice"], "mean": s["dice"]["mean"] + 0.01}, "hd95": {**s["hd95"], "mean": 3.0}}
            for r, s in summary.items()}
    (cv / "postprocessed").mkdir()
    (cv / "postprocessed" / "summary.json").write_text(json.dumps({"n_cases": 27, **post}))
    (cv / "postprocess.json").write_text(json.dumps(plain_data(report, "report")))
    return out

"""Models loaded once, a bounded number of concurrent predictions run off the event loop, and the work itself.

Every allowed model is loaded once, in the application's lifespan (a missing checkpoint stops the start). A prediction
waits at most ``queue_timeout_seconds`` for one of ``max_concurrent_inferences`` slots, else
:class:`ServiceBusy` (HTTP 503 + Retry-After); the work runs in a worker thread so that the event loop keeps
answering (health checks, downloads) while models compute.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import numpy as np

from brats_app import registry
from brats_core.cases import CaseFiles
from brats_core.config import REGIONS
from brats_core.errors import BratsError, CheckpointError
from brats_core.evaluation import Segmenter, segment_case
from brats_core.labels import labels_to_regions
from sspp_unet_api.app.config import Settings
from sspp_unet_api.app.memory import trimmed

T = TypeVar("T")


class ServiceBusy(Exception):
    """Every inference slot stayed busy for the queue timeout (or the disk is full): HTTP 503."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _auto_device() -> str:
    """The device ``auto`` means here (:func:`brats_core.device.resolve_device`; imports torch, so off the loop)."""
    from brats_core.device import resolve_device

    return str(resolve_device("auto"))


class InferenceService:
    """The served models and the inference slots."""

    def __init__(self, settings: Settings, segmenter: Segmenter | None = None) -> None:
        servable = registry.pickle_free_models()
        unknown = [m for m in settings.allowed_models if m not in registry.REGISTRY]
        if unknown:
            raise BratsError(f"unknown model(s) {', '.join(unknown)} in BRATS_ALLOWED_MODELS / BRATS_MODEL; "
                             f"the API can serve {', '.join(servable)}")
        not_servable = [m for m in settings.allowed_models if m not in servable]
        if not_servable:
            raise BratsError(
                f"model(s) {', '.join(not_servable)} cannot be served: their checkpoints are pickles, which the "
                f"API never loads; choose among {', '.join(servable)}"
            )
        self.settings = settings
        #: Resolved in :meth:`start` (importing torch here would slow down importing the app).
        self.device = str(getattr(segmenter, "device", "cpu")) if segmenter is not None else settings.device
        self._models: dict[str, Segmenter] = {settings.model: segmenter} if segmenter is not None else {}
        self._slots: anyio.Semaphore | None = None
        self.active = 0
        self._mean_seconds = 1.0

    def checkpoint_name(self) -> str | None:
        """File name of the default model's checkpoint (never the server's full path)."""
        model = self._models.get(self.settings.model)
        path = getattr(model, "meta", {}).get("path") if model is not None else None
        path = path or self.settings.checkpoint(self.settings.model)
        return Path(path).name if path else None

    def model(self, name: str, tta: bool = False) -> Segmenter:
        """The loaded segmenter ``name``; with ``tta``, the same network predicting with test-time flips."""
        if name not in self._models:
            raise BratsError(
                f"model {name[:64]!r} is not served here; choose one of {', '.join(self.settings.allowed_models)}"
            )
        segmenter = self._models[name]
        if not tta:
            return segmenter
        with_tta = getattr(segmenter, "with_tta", None)
        if with_tta is None:
            raise BratsError(f"model {name!r} has no test-time flips; send tta false or pick a deep model")
        return with_tta(True)

    def _load(self, name: str) -> None:
        path = self.settings.checkpoint(name)
        if not path.is_file():
            variable = "BRATS_CHECKPOINT" + ("" if name == self.settings.model else f"_{name.upper()}")
            raise CheckpointError(
                f"checkpoint of model {name!r} not found: {path}. Train one with `brats train {name}` "
                f"or set {variable} to an export"
            )
        options = {}
        if registry.spec(name).members:  # a fusion shares the networks already loaded for the served members
            exports = {served: getattr(model, "meta", {}).get("path") for served, model in self._models.items()}
            options["loaded"] = {str(Path(path).resolve()): self._models[served]
                                 for served, path in exports.items() if path}
        self._models[name] = registry.load_segmenter(name, path, device=self.device, **options)

    async def start(self) -> None:
        """Create the slots and load every allowed model once, a fusion after the models it fuses (call from the
        running event loop)."""
        self._slots = anyio.Semaphore(self.settings.max_concurrent_inferences)
        if self.device == "auto":
            self.device = await anyio.to_thread.run_sync(_auto_device)
        for name in sorted(self.settings.allowed_models, key=lambda n: bool(registry.spec(n).members)):
            if name not in self._models:
                await anyio.to_thread.run_sync(self._load, name)

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about one mean prediction."""
        return max(1, math.ceil(self._mean_seconds))

    async def _wait_for_slot(self) -> None:
        try:
            with anyio.fail_after(self.settings.queue_timeout_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise ServiceBusy(
                f"all {self.settings.max_concurrent_inferences} inference slot(s) stayed busy for "
                f"{self.settings.queue_timeout_seconds:g} s; retry later",
                self.retry_after(),
            ) from None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one inference slot, waiting at most ``queue_timeout_seconds`` for it."""
        assert self._slots is not None, "InferenceService.start() was not awaited"
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            await self._wait_for_slot()
        self.active += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self.active -= 1
            self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.perf_counter() - start)
            self._slots.release()

    async def run(self, func: Callable[..., T], *args: object) -> T:
        """Run ``func(*args)`` in a worker thread while holding an inference slot."""
        async with self.slot():
            return await anyio.to_thread.run_sync(trimmed(func), *args)


#: Decimals of the numbers in a prediction's JSON: volumes to 0.1 mL, metrics to 4 decimals, times to 1 ms.
VOLUME_DECIMALS, METRIC_DECIMALS, SECONDS_DECIMALS = 1, 4, 3


def predict_case(segmenter: Segmenter, files: CaseFiles, out_path: Path) -> dict:
    """Segment one case, save the label map (case geometry) to ``out_path``; volumes (mL), metrics, timings,
    rounded to :data:`VOLUME_DECIMALS`, :data:`METRIC_DECIMALS` and :data:`SECONDS_DECIMALS` decimals.

    The case is loaded here, inside the inference slot, so that requests waiting for a slot hold no volumes in
    memory (a one-shot request therefore reads its files twice: validation at upload, then here).
    """
    start = time.perf_counter()
    done = segment_case(segmenter, files, out_path)
    case, scores = done.case, done.scores
    voxel_ml = float(np.prod(case.spacing)) / 1000.0
    counts = np.count_nonzero(labels_to_regions(done.labels), axis=(1, 2, 3))
    volumes = {
        region: round(int(count) * voxel_ml, VOLUME_DECIMALS) for region, count in zip(REGIONS, counts, strict=True)
    }
    metrics = None
    if scores is not None:
        names = {"dice": "dice", "hd95_mm": "hd95", "sensitivity": "sensitivity", "specificity": "specificity"}
        metrics = {
            region: {ours: round(float(scores[f"{region}_{theirs}"]), METRIC_DECIMALS) for ours, theirs in names.items()}
            for region in REGIONS
        }
    return {
        "shape": list(case.shape),
        "spacing_mm": [float(s) for s in case.spacing],
        "volumes_ml": volumes,
        "metrics": metrics,
        "runtime_seconds": round(done.seconds, SECONDS_DECIMALS),
        "total_seconds": round(time.perf_counter() - start, SECONDS_DECIMALS),
    }

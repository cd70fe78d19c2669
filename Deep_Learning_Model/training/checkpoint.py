"""Full training checkpoints (``last.pt``, ``best.pt``): everything needed to continue a run exactly.

A checkpoint is one ``torch.save`` file of tensors and plain data only, readable with
``torch.load(weights_only=True)``::

    {"format": "brats-train-checkpoint", "version": 1, "epoch": completed epochs, "global_step": int,
     "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "config": TrainConfig.to_dict(), "model_config": ..., "preprocess": ..., "metrics": {...}}

No RNG state is stored: every epoch reseeds all generators from ``(seed, epoch, rank)``, so continuing from
an epoch boundary replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from brats_core.errors import ArtifactError

FORMAT = "brats-train-checkpoint"
VERSION = 1
REQUIRED = ("epoch", "global_step", "model", "optimizer", "scheduler", "scaler", "config", "metrics")


def save_checkpoint(path: Path | str, state: dict) -> Path:
    """Write ``state`` (see the module docstring) to ``path`` atomically: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path | str) -> dict:
    """Read a checkpoint onto the CPU; a missing, corrupt or foreign file raises :class:`ArtifactError`."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: training checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ArtifactError(f"{path}: not a readable training checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a training checkpoint (expected format {FORMAT!r})")
    if state.get("version") != VERSION:
        raise ArtifactError(f"{path}: checkpoint version {state.get('version')!r}, this code reads {VERSION}")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise ArtifactError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state

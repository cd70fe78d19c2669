"""Training state (``last.pt``, ``best.pt``): everything needed to continue a run exactly.

(Not a checkpoint: the trained model file a run delivers is its export, ``export.pt``.) A training state is
one ``torch.save`` file of tensors and plain data only, readable with
``torch.load(weights_only=True)``::

    {"format": "brats-train-checkpoint", "version": 1, "epoch": completed epochs, "global_step": int,
     "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "config": TrainConfig.to_dict(), "model_config": ..., "preprocess": ..., "metrics": {...}}

No RNG state is stored: every epoch reseeds all generators from ``(seed, epoch, rank)``, so continuing from
an epoch boundary replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

from pathlib import Path

from brats_core.errors import CheckpointError
from Deep_Learning_Model.serialization import load_versioned, save_atomic

FORMAT = "brats-train-checkpoint"
VERSION = 1
REQUIRED = ("epoch", "global_step", "model", "optimizer", "scheduler", "scaler", "config", "metrics")


def save_training_state(path: Path | str, state: dict) -> Path:
    """Write ``state`` (see the module docstring) to ``path`` atomically: a crash never leaves half a file."""
    return save_atomic({"format": FORMAT, "version": VERSION, **state}, path)


def load_training_state(path: Path | str) -> dict:
    """Read a training state onto the CPU; a missing, corrupt or foreign file raises :class:`CheckpointError`."""
    state = load_versioned(path, FORMAT, VERSION, "training state")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{path}: training state lacks {', '.join(missing)}")
    return state

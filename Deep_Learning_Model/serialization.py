"""Files of the deep models, shared by inference exports and training state: plain data, atomic saves and
versioned ``torch.load(weights_only=True)`` reads (no pickled code is ever executed)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from brats_core.errors import BratsError, CheckpointError
from brats_core.files import atomic_path


def plain_data(value: object, where: str) -> object:
    """``value`` as plain data (dict/list/str/int/float/bool/None): numpy scalars become Python numbers, paths
    strings, non-finite floats strings (JSON has no NaN); anything else raises :class:`BratsError` naming
    ``where`` (e.g. ``"export field info"``) and the key path inside it.
    """
    if isinstance(value, np.generic):  # before the builtins: np.float64 is a float subclass
        return plain_data(value.item(), where)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain_data(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise BratsError(f"{where} holds a {type(value).__name__}, not plain data")


def save_atomic(obj: object, path: Path | str) -> Path:
    """``torch.save(obj, path)`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_versioned(path: Path | str, fmt: str, version: int, what: str) -> dict:
    """``torch.load(weights_only=True)`` of a ``{"format": fmt, "version": version, ...}`` file onto the CPU.

    A missing, unreadable (corrupt, truncated, pickled code) or foreign file, or another version, raises
    :class:`CheckpointError` naming the file and ``what`` it should be (e.g. ``"model export"``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {what} (expected format {fmt!r})")
    if payload.get("version") != version:
        raise CheckpointError(f"{path}: {what} version {payload.get('version')!r}, this code reads version {version}")
    return payload

"""Inference exports: fp16 weights plus plain-data configuration, loadable with ``torch.load(weights_only=True)``.

An export is one ``torch.save`` file holding only tensors and plain Python data (no pickled code)::

    {"format": "brats-seg-export", "version": 1,
     "model_config": ModelConfig.to_dict(), "preprocess": PreprocessConfig.to_dict(),
     "metrics": {...}, "info": {...}, "state_dict": {name: fp16 tensor (integer buffers unchanged)}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from brats_core.config import PreprocessConfig
from brats_core.errors import BratsError, CheckpointError
from brats_core.files import atomic_path
from Deep_Learning_Model.model import ModelConfig, build_model

FORMAT = "brats-seg-export"
VERSION = 1


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


def save_export(
    path: Path | str,
    model: nn.Module,
    model_config: ModelConfig,
    preprocess: PreprocessConfig,
    metrics: dict,
    info: dict,
) -> Path:
    """Write the inference export of ``model`` to ``path`` atomically (:func:`save_atomic`)."""
    state = {
        name: (t.detach().to("cpu", torch.float16) if t.is_floating_point() else t.detach().cpu()).contiguous()
        for name, t in model.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model_config.to_dict(),
        "preprocess": plain_data(preprocess.to_dict(), "export field preprocess"),
        "metrics": plain_data(metrics, "export field metrics"),
        "info": plain_data(info, "export field info"),
        "state_dict": state,
    }
    return save_atomic(payload, path)


def write_random_export(path: Path | str, model_config: ModelConfig, seed: int = 0) -> Path:
    """Export a randomly initialised ``model_config`` model, preprocessing at its ``input_size``.

    A trained model's interface and cost without its skill, for tests and for benchmarks where no trained
    export is at hand; ``info["weights"]`` says so. The global torch random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(model_config)
    info = {"weights": f"random initialisation, seed {seed}"}
    return save_export(path, model, model_config, PreprocessConfig(size=model_config.input_size), {}, info)


def read_export(path: Path | str) -> dict:
    """The raw payload of an export, checked for format and version (no model is built)."""
    payload = load_versioned(path, FORMAT, VERSION, "model export")
    missing = [k for k in ("model_config", "preprocess", "state_dict") if not isinstance(payload.get(k), dict)]
    if missing:
        raise CheckpointError(f"{path}: export lacks {', '.join(missing)}")
    return payload


def load_export(
    path: Path | str, device: torch.device | str = "cpu"
) -> tuple[nn.Module, ModelConfig, PreprocessConfig, dict]:
    """Load an export: ``(model in eval mode with fp32 weights on device, ModelConfig, PreprocessConfig, meta)``.

    ``meta`` holds the saved ``metrics`` and ``info`` and the ``path``. Missing, corrupt or mismatched files
    raise :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    payload = read_export(path)
    try:
        model_config = ModelConfig.from_dict(payload["model_config"])
        preprocess = PreprocessConfig.from_dict(payload["preprocess"])
    except (BratsError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid configuration in export ({exc})") from exc
    if model_config.arch == "sspp" and preprocess.size != model_config.input_size:
        raise CheckpointError(
            f"{path}: SSPP model built for {model_config.input_size}px slices but preprocessing size is "
            f"{preprocess.size}"
        )
    model = build_model(model_config)
    tensors = payload["state_dict"]
    not_tensors = sorted(k for k, v in tensors.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{path}: state_dict entries {not_tensors[:5]} are not tensors")
    try:
        model.load_state_dict(tensors, strict=True)  # copies the fp16 values into the fp32 parameters
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the model configuration: {exc}") from exc
    model.to(device).eval()
    meta = {"metrics": payload.get("metrics", {}), "info": payload.get("info", {}), "path": str(path)}
    return model, model_config, preprocess, meta

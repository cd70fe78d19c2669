"""Inference exports: fp16 weights plus plain-data configuration, loadable with ``torch.load(weights_only=True)``.

An export is one ``torch.save`` file holding only tensors and plain Python data (no pickled code)::

    {"format": "brats-seg-export", "version": 1,
     "model_config": ModelConfig.to_dict(), "preprocess": PreprocessConfig.to_dict(),
     "metrics": {...}, "info": {...}, "state_dict": {name: fp16 tensor (integer buffers unchanged)}}
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from brats_core.config import PreprocessConfig
from brats_core.errors import BratsError, CheckpointError
from Deep_Learning_Model.model import ModelConfig, build_model
from Deep_Learning_Model.serialization import load_versioned, plain_data, save_atomic

FORMAT = "brats-seg-export"
VERSION = 1


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

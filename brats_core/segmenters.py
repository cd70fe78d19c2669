"""Registry of trained models by name. Each entry points at a ``load_segmenter`` in the package that owns it."""

from __future__ import annotations

import importlib
from pathlib import Path

from brats_core.errors import BratsError
from brats_core.evaluation import Segmenter

#: model name -> "module:function"; the function is ``load_segmenter(name, artifact=None, device=None)``.
REGISTRY: dict[str, str] = {
    "naive": "Naive_Model.naive_mean_model:load_segmenter",
    "ridge": "Machine_Learning_Model.models:load_segmenter",
    "tree": "Machine_Learning_Model.models:load_segmenter",
    "knn": "Machine_Learning_Model.models:load_segmenter",
    "ensemble": "Machine_Learning_Model.models:load_segmenter",
    "unet": "Deep_Learning_Model.predictor:load_segmenter",
    "sspp": "Deep_Learning_Model.predictor:load_segmenter",
}


def load_segmenter(name: str, artifact: Path | str | None = None, device: str | None = None) -> Segmenter:
    """Load model ``name`` from ``artifact`` (default: the artifact shipped in the repository)."""
    if name not in REGISTRY:
        raise BratsError(f"unknown model {name!r}; choose one of {', '.join(REGISTRY)}")
    module_name, func_name = REGISTRY[name].split(":")
    loader = getattr(importlib.import_module(module_name), func_name)
    return loader(name, artifact=Path(artifact) if artifact is not None else None, device=device)

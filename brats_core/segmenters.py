"""Registry of trained models by name. Each entry points at a ``load_segmenter`` in the package that owns it."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from brats_core.errors import BratsError
from brats_core.evaluation import Segmenter

#: model name -> "module:function"; the function is ``load_segmenter(name, artifact=None, device=None, **options)``
#: and declares the options it supports as keyword parameters (e.g. ``tta: bool = False``).
REGISTRY: dict[str, str] = {
    "naive": "Naive_Model.naive_mean_model:load_segmenter",
    "ridge": "Machine_Learning_Model.models:load_segmenter",
    "tree": "Machine_Learning_Model.models:load_segmenter",
    "knn": "Machine_Learning_Model.models:load_segmenter",
    "ensemble": "Machine_Learning_Model.models:load_segmenter",
    "unet": "Deep_Learning_Model.predictor:load_segmenter",
    "sspp": "Deep_Learning_Model.predictor:load_segmenter",
    "fusion": "Deep_Learning_Model.fusion:load_segmenter",
}


def load_segmenter(
    name: str, artifact: Path | str | None = None, device: str | None = None, **options: object
) -> Segmenter:
    """Load model ``name`` from ``artifact`` (default: the artifact shipped in the repository).

    ``options`` (e.g. ``tta=True``) are passed to the model's loader; an option the loader does not declare
    raises BratsError instead of being silently ignored.
    """
    if name not in REGISTRY:
        raise BratsError(f"unknown model {name!r}; choose one of {', '.join(REGISTRY)}")
    module_name, func_name = REGISTRY[name].split(":")
    loader = getattr(importlib.import_module(module_name), func_name)
    parameters = inspect.signature(loader).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unsupported = sorted(set(options) - set(parameters))
        if unsupported:
            raise BratsError(f"model {name!r} does not support option(s) {', '.join(unsupported)}")
    return loader(name, artifact=Path(artifact) if artifact is not None else None, device=device, **options)

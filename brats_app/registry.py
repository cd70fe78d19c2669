"""The one list of models: adding a model is its package plus one :class:`ModelSpec` entry here.

Everything that names models reads this registry: the ``brats`` CLI (``train``, ``predict``, ``compare``), the
API (which models it may serve, their default checkpoints) and the UI. Each entry points at functions of the
package that owns the model, imported only when used.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from brats_core.config import REPO_ROOT
from brats_core.errors import BratsError, CheckpointError

if TYPE_CHECKING:
    from brats_core.evaluation import Segmenter


@dataclass(frozen=True)
class ModelSpec:
    """One model: how it is named, trained, loaded and where its shipped checkpoint lives."""

    name: str
    #: Name shown in tables and figures.
    display: str
    #: Models of one family are trained together (``brats train <family>``; the ML models share features).
    family: str
    #: ``"module:function"``: ``load_segmenter(name, checkpoint, device=None, **options)``; the function declares
    #: the options it supports as keyword parameters (e.g. ``tta: bool = False``).
    loader: str
    #: ``"module:function"``: the family's training command, ``main(argv)``; with ``trainer_fixes_model``,
    #: ``main(argv, model=name)``, whose parser then fixes the model (no ``--model`` option, ``--help`` says so).
    trainer: str
    #: The shipped checkpoint, used when none is given.
    default_checkpoint: Path
    #: Whether the checkpoint loads without unpickling (the API serves only these).
    pickle_free: bool
    #: ``"module:function"``: ``fit(names, job) -> {name: (segmenter, train seconds or None)}`` for
    #: ``brats compare`` (:class:`brats_app.compare.runner.TrainJob`).
    fit: str
    trainer_fixes_model: bool = False
    #: A model built from others (the fusion): the models it combines, which come before it in the registry.
    members: tuple[str, ...] = ()
    #: The seed project's headline number for this model (its own data, metric and split), if it reported one.
    seed_score: float | None = None


_NAIVE = REPO_ROOT / "Naive_Model" / "checkpoints"
_ML = REPO_ROOT / "Machine_Learning_Model" / "checkpoints"
_DL = REPO_ROOT / "Deep_Learning_Model" / "checkpoints"
_FITS = "brats_app.compare.families"


def _ml(name: str, display: str, seed_score: float | None = None) -> ModelSpec:
    return ModelSpec(name, display, "ml", "Machine_Learning_Model.models:load_segmenter",
                     "Machine_Learning_Model.train:main", _ML / f"{name}.joblib", False, f"{_FITS}:train_ml",
                     seed_score=seed_score)


def _deep(name: str, display: str, seed_score: float | None = None) -> ModelSpec:
    return ModelSpec(name, display, name, "Deep_Learning_Model.predictor:load_segmenter",
                     "Deep_Learning_Model.train:main", _DL / f"{name}.pt", True, f"{_FITS}:train_deep",
                     trainer_fixes_model=True, seed_score=seed_score)


#: Every model, in table order.
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("naive", "Naive (mean atlas)", "naive", "Naive_Model.naive_mean_model:load_segmenter",
                  "Naive_Model.naive_mean_model:main", _NAIVE / "naive.npz", True, f"{_FITS}:train_naive",
                  seed_score=56.39),
        _ml("ridge", "Ridge"),
        _ml("tree", "Decision tree"),
        _ml("knn", "KNN"),
        _ml("ensemble", "Ensemble (vote)", seed_score=58.21),
        _deep("unet", "U-Net", seed_score=64.79),
        _deep("sspp", "U-Net + SSPP", seed_score=85.37),
        ModelSpec("fusion", "Fusion of U-Net and U-Net + SSPP", "fusion", "Deep_Learning_Model.fusion:load_segmenter",
                  "Deep_Learning_Model.fusion_manifest:main", _DL / "fusion.json", True, f"{_FITS}:train_fusion",
                  members=("unet", "sspp")),
    )
}


def pickle_free_models() -> tuple[str, ...]:
    return tuple(name for name, spec in REGISTRY.items() if spec.pickle_free)


def models_of(*packages: str, composites: bool = True) -> tuple[str, ...]:
    """The models whose loader lives in one of ``packages`` (e.g. ``"Deep_Learning_Model"``), in table order;
    without ``composites``, only those trained themselves (not the fusion, built from its ``members``)."""
    return tuple(name for name, spec in REGISTRY.items()
                 if spec.loader.split(".")[0] in packages and (composites or not spec.members))


def families() -> dict[str, list[ModelSpec]]:
    """Family -> its models, in registry order."""
    out: dict[str, list[ModelSpec]] = {}
    for spec in REGISTRY.values():
        out.setdefault(spec.family, []).append(spec)
    return out


def spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise BratsError(f"unknown model {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def resolve(target: str) -> Callable:
    """The function named by ``"module:function"``."""
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def default_checkpoint(name: str) -> Path:
    """The shipped checkpoint of model ``name``."""
    return spec(name).default_checkpoint


def load_segmenter(
    name: str, checkpoint: Path | str | None = None, device: str | None = None, **options: object
) -> Segmenter:
    """Load model ``name`` from ``checkpoint`` (default: the checkpoint shipped in the repository).

    ``options`` (e.g. ``tta=True``) are passed to the model's loader; an option the loader does not declare
    raises BratsError instead of being silently ignored.
    """
    entry = spec(name)
    loader = resolve(entry.loader)
    parameters = inspect.signature(loader).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unsupported = sorted(set(options) - set(parameters))
        if unsupported:
            raise BratsError(f"model {name!r} does not support option(s) {', '.join(unsupported)}")
    if checkpoint is None:
        checkpoint = entry.default_checkpoint
        if not checkpoint.is_file():
            raise CheckpointError(
                f"{checkpoint}: no shipped {name} checkpoint; train one with `brats train {entry.family}`"
            )
    return loader(name, checkpoint=Path(checkpoint), device=device, **options)

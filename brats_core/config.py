"""Typed configuration and constants shared by every stage, in one place."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from brats_core.errors import BratsError

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Modalities in channel order. BraTS 2023+ names map onto these (see ``brats_core.cases``).
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
#: BraTS label values: 0 background, 1 necrotic/non-enhancing core, 2 edema, 4 enhancing tumour.
LABELS: tuple[int, ...] = (0, 1, 2, 4)
LABEL_NAMES: dict[int, str] = {0: "background", 1: "NCR/NET", 2: "ED", 4: "ET"}
#: Evaluation regions (BraTS convention).
REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
#: HD95 (mm) when exactly one of prediction and reference is empty (BraTS 2020 convention).
HD95_ONE_EMPTY = 373.13

#: Folder of the 20 shared development cases, next to the repository (absent on a user's fresh clone).
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "brats_dev"
#: The saved patient-level split of the shared cases, used by every model.
DEFAULT_SPLIT = REPO_ROOT / "splits" / "brats_dev.json"
#: Results written by the shared evaluation harness.
RESULTS_DIR = REPO_ROOT / "results"


def cache_dir() -> Path:
    """Where preprocessed slice caches live (``BRATS_CACHE_DIR`` overrides)."""
    return Path(os.environ.get("BRATS_CACHE_DIR", REPO_ROOT / ".cache" / "slices"))


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of :func:`brats_core.preprocessing.preprocess`; part of every cache key and checkpoint."""

    #: In-plane size of the resized crop (square); ``None`` keeps the native crop size.
    size: int | None = 128
    #: Intensity percentiles (inside the brain) clipped before z-scoring, for robustness to outliers.
    clip_percentiles: tuple[float, float] = (0.5, 99.5)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        return cls(size=data["size"], clip_percentiles=tuple(data["clip_percentiles"]))


def check_known_fields(cls: type, names: Iterable[str], what: str) -> None:
    """Raise :class:`BratsError` listing the ``names`` that are not fields of dataclass ``cls`` (a ``what``)."""
    unknown = sorted(set(names) - {f.name for f in fields(cls)})
    if unknown:
        raise BratsError(f"unknown {what} fields {unknown}")

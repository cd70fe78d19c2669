"""Post-processing of predicted label maps, and its tuning on out-of-fold predictions (numpy/scipy only).

Two label operations, both used by the top BraTS entries (nnU-Net's BraTS 2020 post-processing):

- drop tumour components smaller than ``min_component_mm3``: connected components (26-connectivity) of the
  whole tumour (labels > 0) below that volume become background;
- turn a small enhancing tumour into core: when the total ET volume is below ``et_min_mm3``, its voxels become
  label 1 (NCR/NET). BraTS scores a case without ET in the reference 1 when the prediction has none, 0 when it
  has any, so a few false ET voxels cost a whole case.

:func:`tune_postprocess` picks both volumes from a list of out-of-fold ``(prediction, reference, spacing)``
cases by the mean Dice over cases and regions WT/TC/ET. :class:`PostprocessConfig` also carries the thresholds
of models with region-probability outputs (0.5 each unless tuned); it is recorded in a model's checkpoint and
applied by its predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from brats_core.config import REGIONS, check_known_fields
from brats_core.errors import BratsError
from brats_core.labels import DEFAULT_THRESHOLDS, labels_to_regions
from brats_core.metrics import dice

#: Volumes (mm³) tried by :func:`tune_postprocess` for each parameter (0: off).
COMPONENT_GRID: tuple[float, ...] = (0, 50, 100, 250, 500, 1000, 2000, 4000)
ET_GRID: tuple[float, ...] = (0, 50, 100, 200, 300, 500, 750, 1000)
_STRUCTURE = ndimage.generate_binary_structure(3, 3)  # 26-connectivity


@dataclass(frozen=True)
class PostprocessConfig:
    """Parameters of :func:`apply_postprocess`; the defaults change nothing."""

    #: Thresholds of the WT, TC and ET probabilities (models with a region head only).
    thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS
    #: Tumour components smaller than this (mm³) are removed; 0 keeps all.
    min_component_mm3: float = 0.0
    #: ET becomes NCR/NET (label 1) when its total volume is below this (mm³); 0 keeps it.
    et_min_mm3: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        problems = []
        if len(self.thresholds) != len(REGIONS) or not all(0 < t < 1 for t in self.thresholds):
            problems.append(f"thresholds must be {len(REGIONS)} numbers in (0, 1), got {self.thresholds}")
        if not self.min_component_mm3 >= 0 or not self.et_min_mm3 >= 0:
            problems.append("min_component_mm3 and et_min_mm3 must be >= 0")
        if problems:
            raise BratsError("invalid post-processing: " + "; ".join(problems))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["thresholds"] = list(self.thresholds)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PostprocessConfig:
        check_known_fields(cls, data, "post-processing")
        return cls(**data)


def _voxel_mm3(spacing: Sequence[float]) -> float:
    return float(np.prod(np.asarray(spacing, dtype=np.float64)))


def _components(tumour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Component index of each voxel (0: none) and the voxel count of each index."""
    components, count = ndimage.label(tumour, structure=_STRUCTURE)
    return components, np.bincount(components.ravel(), minlength=count + 1)


def remove_small_components(labels: np.ndarray, spacing: Sequence[float], min_mm3: float) -> np.ndarray:
    """``labels`` with the tumour components (labels > 0, 26-connected) smaller than ``min_mm3`` set to 0."""
    labels = np.asarray(labels)
    if min_mm3 <= 0 or not labels.any():
        return labels
    components, sizes = _components(labels > 0)
    small = sizes * _voxel_mm3(spacing) < min_mm3
    small[0] = False
    return np.where(small[components], 0, labels).astype(labels.dtype)


def small_et_to_core(labels: np.ndarray, spacing: Sequence[float], min_mm3: float) -> np.ndarray:
    """``labels`` with ET (4) turned into NCR/NET (1) when the total ET volume is below ``min_mm3``."""
    labels = np.asarray(labels)
    et = labels == 4
    if min_mm3 <= 0 or np.count_nonzero(et) * _voxel_mm3(spacing) >= min_mm3:
        return labels
    return np.where(et, 1, labels).astype(labels.dtype)


def apply_postprocess(labels: np.ndarray, spacing: Sequence[float], config: PostprocessConfig) -> np.ndarray:
    """Both label operations of ``config`` (components first, then ET); ``labels`` itself when both are off."""
    labels = remove_small_components(labels, spacing, config.min_component_mm3)
    return small_et_to_core(labels, spacing, config.et_min_mm3)


def _union_crop(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both maps cropped to the bounding box of their union (components and Dice do not change)."""
    union = (pred > 0) | (ref > 0)
    if not union.any():
        return pred[:1, :1, :1], ref[:1, :1, :1]
    box = []
    for axis in range(union.ndim):
        present = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return pred[tuple(box)], ref[tuple(box)]


def _case_scores(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                 component_grid: Sequence[float], et_grid: Sequence[float]) -> np.ndarray:
    """Mean Dice over WT/TC/ET of one case for every (component volume, ET volume) pair of the grids."""
    pred, ref = _union_crop(np.asarray(pred), np.asarray(ref))
    voxel = _voxel_mm3(spacing)
    components, sizes = _components(pred > 0)
    volumes = sizes * voxel
    ref_regions = labels_to_regions(ref)
    out = np.empty((len(component_grid), len(et_grid)))
    for i, min_component in enumerate(component_grid):
        small = volumes < min_component
        small[0] = False
        kept = labels_to_regions(np.where(small[components], 0, pred))
        wt = dice(kept[0], ref_regions[0])
        tc = dice(kept[1], ref_regions[1])  # ET -> NCR keeps TC and WT as they are
        et_mask = kept[2]
        et_kept, et_core = dice(et_mask, ref_regions[2]), dice(np.zeros_like(et_mask), ref_regions[2])
        et_volume = np.count_nonzero(et_mask) * voxel
        for j, min_et in enumerate(et_grid):
            out[i, j] = (wt + tc + (et_core if min_et > 0 and et_volume < min_et else et_kept)) / 3
    return out


def _choose(scores: np.ndarray, component_grid: Sequence[float], et_grid: Sequence[float],
            thresholds: Sequence[float]) -> tuple[PostprocessConfig, tuple[int, int]]:
    """The config of the best mean Dice in ``scores`` (component x ET grid) and its grid cell; ties go to the
    smallest volumes."""
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)  # first maximum: smallest volumes
    return PostprocessConfig(tuple(thresholds), float(component_grid[i]), float(et_grid[j])), (int(i), int(j))


def tune_postprocess(
    cases: Sequence[tuple[np.ndarray, np.ndarray, Sequence[float]]],
    component_grid: Sequence[float] = COMPONENT_GRID,
    et_grid: Sequence[float] = ET_GRID,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    folds: Sequence[int] | None = None,
) -> tuple[PostprocessConfig, dict]:
    """The (component volume, ET volume) pair of the grids with the best mean Dice over ``cases``.

    ``cases`` are out-of-fold ``(prediction, reference, spacing)`` label maps (0/1/2/4) of models never trained
    on them. Ties go to the smaller volumes (the least change). Returns the config (with ``thresholds``) and a
    report: the grids, the mean Dice of every pair, the untouched and the best mean Dice.

    With ``folds`` (each case's CV fold) the report's ``nested`` also holds, for each fold, the pair tuned on
    the other folds' cases alone (``chosen``) and the mean Dice of every case under its fold's pair
    (``mean_dice``): tuning and scoring on the same cases flatters the tuned setting, the nested figure does not.
    """
    if not cases:
        raise BratsError("post-processing needs at least one out-of-fold case to tune on")
    for n, (pred, ref, _) in enumerate(cases):
        if np.shape(pred) != np.shape(ref):
            raise BratsError(f"out-of-fold case {n}: prediction shape {np.shape(pred)} != reference {np.shape(ref)}")
    if folds is not None and len(folds) != len(cases):  # checked before the costly scoring
        raise BratsError(f"nested tuning: {len(folds)} fold numbers for {len(cases)} cases")
    if folds is not None and len(set(folds)) < 2:
        raise BratsError("nested tuning needs the cases of at least two folds")
    per_case = np.stack([_case_scores(p, r, s, component_grid, et_grid) for p, r, s in cases])
    scores = per_case.mean(axis=0)
    config, best = _choose(scores, component_grid, et_grid, thresholds)
    off = 0 in component_grid and 0 in et_grid
    none = float(scores[list(component_grid).index(0), list(et_grid).index(0)]) if off else None
    report = {"component_grid_mm3": list(map(float, component_grid)), "et_grid_mm3": list(map(float, et_grid)),
              "mean_dice": scores.tolist(), "mean_dice_without": none,
              "mean_dice_best": float(scores[best]), "cases": len(cases), "chosen": config.to_dict()}  # fmt: skip
    if folds is not None:
        report["nested"] = _nested(per_case, np.asarray(folds), component_grid, et_grid, thresholds)
    return config, report


def _nested(per_case: np.ndarray, folds: np.ndarray, component_grid: Sequence[float], et_grid: Sequence[float],
            thresholds: Sequence[float]) -> dict:
    """Each fold's pair tuned on the other folds' cases, and the mean Dice of every case under its fold's pair."""
    chosen, case_dice = {}, np.empty(len(folds))
    for fold in np.unique(folds):
        mine = folds == fold
        config, cell = _choose(per_case[~mine].mean(axis=0), component_grid, et_grid, thresholds)
        chosen[str(fold)] = config.to_dict()
        case_dice[mine] = per_case[mine][:, cell[0], cell[1]]
    return {"chosen": chosen, "mean_dice": float(case_dice.mean())}

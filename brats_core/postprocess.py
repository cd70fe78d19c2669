"""Post-processing of predicted label maps, and its tuning on out-of-fold predictions (numpy/scipy only).

Three label operations, all used by the top BraTS entries (nnU-Net's post-processing and its BraTS 2020 entry):

- drop tumour components smaller than ``min_component_mm3``: connected components (26-connectivity) of the
  whole tumour (labels > 0) below that volume become background;
- keep only the largest tumour component (``keep_largest_component``): every smaller one becomes background
  (nnU-Net's "all but the largest component removed", kept when the cross-validation says it helps);
- turn a small enhancing tumour into core: when the total ET volume is below ``et_min_mm3``, its voxels become
  label 1 (NCR/NET). BraTS scores a case without ET in the reference 1 when the prediction has none, 0 when it
  has any, so a few false ET voxels cost a whole case.

:func:`tune_postprocess` picks all three from a list of out-of-fold ``(prediction, reference, spacing)``
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
#: ``keep_largest_component`` values tried by :func:`tune_postprocess` (off first: ties keep every component).
LARGEST_GRID: tuple[bool, ...] = (False, True)
_STRUCTURE = ndimage.generate_binary_structure(3, 3)  # 26-connectivity
#: The tuning grids: keep-largest values, component volumes, ET volumes.
_Grids = tuple[Sequence[bool], Sequence[float], Sequence[float]]


@dataclass(frozen=True)
class PostprocessConfig:
    """Parameters of :func:`apply_postprocess`; the defaults change nothing."""

    #: Thresholds of the WT, TC and ET probabilities (models with a region head only).
    thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS
    #: Tumour components smaller than this (mm³) are removed; 0 keeps all.
    min_component_mm3: float = 0.0
    #: ET becomes NCR/NET (label 1) when its total volume is below this (mm³); 0 keeps it.
    et_min_mm3: float = 0.0
    #: Only the largest tumour component is kept (after the small ones are dropped); False keeps all.
    keep_largest_component: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        problems = []
        if len(self.thresholds) != len(REGIONS) or not all(0 < t < 1 for t in self.thresholds):
            problems.append(f"thresholds must be {len(REGIONS)} numbers in (0, 1), got {self.thresholds}")
        if not self.min_component_mm3 >= 0 or not self.et_min_mm3 >= 0:
            problems.append("min_component_mm3 and et_min_mm3 must be >= 0")
        if not isinstance(self.keep_largest_component, (bool, np.bool_)):
            problems.append(f"keep_largest_component must be true or false, got {self.keep_largest_component!r}")
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


def _dropped(volumes: np.ndarray, min_mm3: float, keep_largest: bool) -> np.ndarray:
    """Which component indices go (index 0, the background, never): those below ``min_mm3`` and, with
    ``keep_largest``, all but the largest (components of equal largest volume all stay)."""
    drop = volumes < min_mm3
    if keep_largest and len(volumes) > 1:
        drop |= volumes < volumes[1:].max()
    drop[0] = False
    return drop


def remove_small_components(labels: np.ndarray, spacing: Sequence[float], min_mm3: float,
                            keep_largest: bool = False) -> np.ndarray:
    """``labels`` with the tumour components (labels > 0, 26-connected) smaller than ``min_mm3`` set to 0 and,
    with ``keep_largest``, every component but the largest one too."""
    labels = np.asarray(labels)
    if (min_mm3 <= 0 and not keep_largest) or not labels.any():
        return labels
    components, sizes = _components(labels > 0)
    drop = _dropped(sizes * _voxel_mm3(spacing), min_mm3, keep_largest)
    return np.where(drop[components], 0, labels).astype(labels.dtype)


def small_et_to_core(labels: np.ndarray, spacing: Sequence[float], min_mm3: float) -> np.ndarray:
    """``labels`` with ET (4) turned into NCR/NET (1) when the total ET volume is below ``min_mm3``."""
    labels = np.asarray(labels)
    et = labels == 4
    if min_mm3 <= 0 or np.count_nonzero(et) * _voxel_mm3(spacing) >= min_mm3:
        return labels
    return np.where(et, 1, labels).astype(labels.dtype)


def apply_postprocess(labels: np.ndarray, spacing: Sequence[float], config: PostprocessConfig) -> np.ndarray:
    """The label operations of ``config`` (components first, then ET); ``labels`` itself when all are off."""
    labels = remove_small_components(labels, spacing, config.min_component_mm3, config.keep_largest_component)
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


def _case_scores(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], grids: _Grids) -> np.ndarray:
    """Mean Dice over WT/TC/ET of one case for every (keep largest, component volume, ET volume) cell."""
    largest_grid, component_grid, et_grid = grids
    pred, ref = _union_crop(np.asarray(pred), np.asarray(ref))
    voxel = _voxel_mm3(spacing)
    components, sizes = _components(pred > 0)
    volumes = sizes * voxel
    ref_regions = labels_to_regions(ref)
    out = np.empty((len(largest_grid), len(component_grid), len(et_grid)))
    scored: dict[bytes, tuple[float, ...]] = {}  # many cells drop the same components: score each set once
    for k, largest in enumerate(largest_grid):
        for i, min_component in enumerate(component_grid):
            drop = _dropped(volumes, min_component, largest)
            if drop.tobytes() not in scored:
                kept = labels_to_regions(np.where(drop[components], 0, pred))
                et_mask = kept[2]
                scored[drop.tobytes()] = (dice(kept[0], ref_regions[0]),
                                          dice(kept[1], ref_regions[1]),  # ET -> NCR keeps TC and WT as they are
                                          dice(et_mask, ref_regions[2]), dice(np.zeros_like(et_mask), ref_regions[2]),
                                          np.count_nonzero(et_mask) * voxel)
            wt, tc, et_kept, et_core, et_volume = scored[drop.tobytes()]
            for j, min_et in enumerate(et_grid):
                out[k, i, j] = (wt + tc + (et_core if min_et > 0 and et_volume < min_et else et_kept)) / 3
    return out


def _choose(scores: np.ndarray, grids: _Grids, thresholds: Sequence[float]
            ) -> tuple[PostprocessConfig, tuple[int, int, int]]:
    """The config of the best mean Dice in ``scores`` (keep largest x component x ET grid) and its grid cell;
    ties go to the least change (components all kept, then the smallest volumes)."""
    k, i, j = (int(n) for n in np.unravel_index(int(np.argmax(scores)), scores.shape))  # the first maximum
    largest_grid, component_grid, et_grid = grids
    config = PostprocessConfig(tuple(thresholds), float(component_grid[i]), float(et_grid[j]), bool(largest_grid[k]))
    return config, (k, i, j)


def tune_postprocess(
    cases: Sequence[tuple[np.ndarray, np.ndarray, Sequence[float]]],
    component_grid: Sequence[float] = COMPONENT_GRID,
    et_grid: Sequence[float] = ET_GRID,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    folds: Sequence[int] | None = None,
    largest_grid: Sequence[bool] = LARGEST_GRID,
) -> tuple[PostprocessConfig, dict]:
    """The (keep largest, component volume, ET volume) cell of the grids with the best mean Dice over ``cases``.

    ``cases`` are out-of-fold ``(prediction, reference, spacing)`` label maps (0/1/2/4) of models never trained
    on them. Ties go to the least change (all components kept, the smaller volumes). Returns the config (with
    ``thresholds``) and a report: the grids, the mean Dice of every cell (``mean_dice[k][i][j]``: keep largest
    ``k``, component volume ``i``, ET volume ``j``), the untouched and the best mean Dice.

    With ``folds`` (each case's CV fold) the report's ``nested`` also holds, for each fold, the cell tuned on
    the other folds' cases alone (``chosen``) and the mean Dice of every case under its fold's cell
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
    grids = (tuple(map(bool, largest_grid)), tuple(component_grid), tuple(et_grid))
    per_case = np.stack([_case_scores(p, r, s, grids) for p, r, s in cases])
    scores = per_case.mean(axis=0)
    config, best = _choose(scores, grids, thresholds)
    off = False in grids[0] and 0 in component_grid and 0 in et_grid
    none = (float(scores[grids[0].index(False), list(component_grid).index(0), list(et_grid).index(0)])
            if off else None)
    report = {"keep_largest_grid": list(grids[0]), "component_grid_mm3": list(map(float, component_grid)),
              "et_grid_mm3": list(map(float, et_grid)), "mean_dice": scores.tolist(), "mean_dice_without": none,
              "mean_dice_best": float(scores[best]), "cases": len(cases), "chosen": config.to_dict()}  # fmt: skip
    if folds is not None:
        report["nested"] = _nested(per_case, np.asarray(folds), grids, thresholds)
    return config, report


def _nested(per_case: np.ndarray, folds: np.ndarray, grids: _Grids, thresholds: Sequence[float]) -> dict:
    """Each fold's cell tuned on the other folds' cases, and the mean Dice of every case under its fold's cell."""
    chosen, case_dice = {}, np.empty(len(folds))
    for fold in np.unique(folds):
        mine = folds == fold
        config, cell = _choose(per_case[~mine].mean(axis=0), grids, thresholds)
        chosen[str(fold)] = config.to_dict()
        case_dice[mine] = per_case[mine][(slice(None), *cell)]
    return {"chosen": chosen, "mean_dice": float(case_dice.mean())}

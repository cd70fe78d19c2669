"""Per-voxel classifiers (ridge, decision tree, k-nearest neighbours, and their majority-vote ensemble).

A model predicts a case by preprocessing it (:func:`brats_core.preprocessing.preprocess` with the checkpoint's
:class:`~brats_core.config.PreprocessConfig`), computing the features of every brain voxel of the grid
(:mod:`Machine_Learning_Model.features`), classifying them in chunks, mapping the labels back to the original
grid (``Geometry.restore_labels``) and optionally dropping small tumour components.

Decision rule of one classifier: a voxel is tumour when its background score minus its best tumour score is
below a threshold tuned on the validation cases (training samples are class-balanced, so the plain argmax
over-predicts tumour); a tumour voxel takes the tumour label of the best score. The ensemble is a hard
majority vote of its three members' labels, because ``RidgeClassifier`` has no ``predict_proba`` (soft voting
needs probabilities from every member); when all three disagree, the member with the best validation Dice
decides.

Checkpoints are joblib files (a pickle: load only checkpoints you trust) holding the fitted estimators with the
feature names, feature and preprocessing parameters, the atlas prior and library versions; a mismatch with the
running code is refused with :class:`~brats_core.errors.CheckpointError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from scipy import ndimage
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from brats_core.cases import Case
from brats_core.config import LABELS, PreprocessConfig
from brats_core.errors import BratsError, CheckpointError
from brats_core.preprocessing import Geometry, Preprocessed, brain_mask, preprocess
from brats_core.provenance import Provenance
from Machine_Learning_Model.features import FEATURES_VERSION, FeatureConfig, atlas_prior, voxel_features
from Naive_Model.naive_mean_model import check_template_shape

PACKAGE_DIR = Path(__file__).resolve().parent
#: Where ``brats train ml`` writes ``<model>.joblib`` by default.
CHECKPOINT_DIR = PACKAGE_DIR / "checkpoints"
#: Version of the checkpoint layout; bump when the stored keys or their meaning change.
CHECKPOINT_FORMAT = 1
MEMBERS: tuple[str, ...] = ("ridge", "tree", "knn")
MODEL_NAMES: tuple[str, ...] = (*MEMBERS, "ensemble")
#: Voxels classified per estimator call (bounds the memory of KNN distance computations).
CHUNK = 100_000
_TUMOUR_LABELS = np.asarray(LABELS[1:], dtype=np.uint8)


def members_of(*models: str) -> tuple[str, ...]:
    """The member classifiers that ``models`` use (the ensemble uses all three), in :data:`MEMBERS` order."""
    return tuple(m for m in MEMBERS if "ensemble" in models or m in models)


def build_estimator(name: str, seed: int = 0, n_jobs: int | None = None) -> Any:
    """An unfitted scikit-learn estimator for ``name`` (one of :data:`MEMBERS`)."""
    if name == "ridge":
        return make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0))
    if name == "tree":
        return DecisionTreeClassifier(max_depth=16, min_samples_leaf=50, random_state=seed)
    if name == "knn":
        # A KD-tree degrades to brute force in 30 dimensions; on 5 principal components its queries stay
        # logarithmic (a million voxels in seconds) and, measured on the validation cases, lose no Dice.
        return make_pipeline(
            StandardScaler(),
            PCA(n_components=5, random_state=seed),
            KNeighborsClassifier(n_neighbors=15, algorithm="kd_tree", n_jobs=n_jobs),
        )
    raise BratsError(f"unknown classifier {name!r}; choose one of {', '.join(MEMBERS)}")


def set_n_jobs(estimator: Any, n_jobs: int | None) -> None:
    """Set the parallelism of the KNN step (no-op for the others)."""
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    if isinstance(final, KNeighborsClassifier):
        final.n_jobs = n_jobs


def class_scores(estimator: Any, features: np.ndarray) -> np.ndarray:
    """(n, 4) scores for labels 0/1/2/4: probabilities where the estimator has them, else decision values.

    A label missing from the training samples gets the lowest possible score.
    """
    if hasattr(estimator, "predict_proba"):
        raw, missing = estimator.predict_proba(features), 0.0
    else:
        raw, missing = estimator.decision_function(features), -np.inf
    out = np.full((len(features), len(LABELS)), missing, dtype=np.float32)
    for column, label in enumerate(estimator.classes_):
        out[:, LABELS.index(int(label))] = raw[:, column]
    return out


def scores_to_labels(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Labels 0/1/2/4: tumour where ``score(background) - max score(tumour) < threshold``."""
    tumour = scores[:, 0] - scores[:, 1:].max(axis=1) < threshold
    return np.where(tumour, _TUMOUR_LABELS[scores[:, 1:].argmax(axis=1)], 0).astype(np.uint8)


def majority_vote(votes: Mapping[str, np.ndarray], lead: str) -> np.ndarray:
    """Hard vote of three label arrays: the label at least two agree on, else ``votes[lead]``."""
    a, b, c = (votes[name] for name in MEMBERS)
    return np.where(a == b, a, np.where((c == a) | (c == b), c, votes[lead]))


def drop_small_components(labels: np.ndarray, min_fraction: float) -> np.ndarray:
    """Remove whole-tumour components (26-connected) smaller than ``min_fraction`` of the largest one.

    0 keeps everything; 1 keeps only the largest component (and any of equal size).
    """
    if min_fraction <= 0:
        return labels
    components, count = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return labels
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    small = sizes < min_fraction * sizes.max()
    small[0] = False
    return np.where(small[components], 0, labels).astype(np.uint8)


def versions() -> dict[str, Any]:
    return {"format": CHECKPOINT_FORMAT, "features": FEATURES_VERSION, "sklearn": sklearn.__version__,
            "numpy": np.__version__, "joblib": joblib.__version__}


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


class VoxelSegmenter:
    """A fitted classifier (or the ensemble) with everything needed to predict a case; see module docstring."""

    def __init__(self, name: str, estimators: Mapping[str, Any], thresholds: Mapping[str, float],
                 atlas_levels: np.ndarray, preprocess_config: PreprocessConfig, feature_config: FeatureConfig,
                 lead: str | None = None, min_component_fraction: float = 0.0, info: dict | None = None) -> None:
        if name not in MODEL_NAMES:
            raise BratsError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
        self.name = name
        self.estimators = dict(estimators)
        self.thresholds = {key: float(value) for key, value in thresholds.items()}
        self.atlas_levels = np.asarray(atlas_levels, dtype=np.uint8)
        self.preprocess_config = preprocess_config
        self.feature_config = feature_config
        self.lead = lead
        self.min_component_fraction = float(min_component_fraction)
        self.info = dict(info or {})

    @property
    def provenance(self) -> Provenance:
        """The checkpoint's training record; the time is shared features + own fits + tuning."""
        info = self.info
        parts = [info.get(key) for key in ("features_seconds", "fit_seconds", "tuning_seconds")]
        # validation mean Dice at the chosen post-processing (tuning), else of the raw model (ensemble: none)
        tuned = info.get("val_dice_by_min_component_fraction", {}).get(str(self.min_component_fraction))
        raw = info.get("val_grid_dice", {}).get(self.name)
        scores = {key: float(v) for key, v in (("val_mean_dice", tuned), ("val_mean_dice_raw", raw)) if v is not None}
        scores.update(info.get("cv_scores") or {})  # final checkpoints: the out-of-fold scores of their CV
        return Provenance(
            train_cases=tuple(info.get("train_case_ids", ())), val_cases=tuple(info.get("val_case_ids", ())),
            cv_scores=scores or None,
            train_seconds=None if any(p is None for p in parts) else float(sum(parts)),
            hardware=info.get("hardware"), created=info.get("created"),
        )

    @property
    def members(self) -> tuple[str, ...]:
        return members_of(self.name)

    def set_n_jobs(self, n_jobs: int | None) -> None:
        for estimator in self.estimators.values():
            set_n_jobs(estimator, n_jobs)

    def prepare(self, case: Case) -> tuple[Preprocessed, np.ndarray, np.ndarray]:
        """Preprocess ``case``; return it with the flat grid index of its brain voxels and their features."""
        check_template_shape(case, self.atlas_levels.shape[1:], "atlas")
        pre = preprocess(case, self.preprocess_config)
        index = np.flatnonzero(pre.brain)
        return pre, index, voxel_features(pre, atlas_prior(self.atlas_levels, pre.geometry), index, self.feature_config)

    def member_scores(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """(n, 4) class scores of each estimator, computed in chunks of :data:`CHUNK` voxels."""
        starts = range(0, len(features), CHUNK)
        return {
            name: np.concatenate([np.zeros((0, len(LABELS)), np.float32)]
                                 + [class_scores(estimator, features[start : start + CHUNK]) for start in starts])
            for name, estimator in self.estimators.items()
        }

    def grid_labels(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """Labels of the brain voxels from the members' scores (one model, or the majority vote)."""
        votes = {name: scores_to_labels(scores[name], self.thresholds[name]) for name in self.members}
        return votes[self.name] if self.name != "ensemble" else majority_vote(votes, self.lead)

    @staticmethod
    def restore(geometry: Geometry, index: np.ndarray, voxel_labels: np.ndarray, brain: np.ndarray) -> np.ndarray:
        """Labels of the grid's brain voxels ``index`` -> uint8 labels in the case's original grid, zero outside
        ``brain`` (its brain mask in that grid: the grid's resize blurs the brain's edge)."""
        grid = np.zeros((geometry.crop_shape[2], geometry.size, geometry.size), dtype=np.uint8)
        grid.reshape(-1)[index] = voxel_labels
        labels = geometry.restore_labels(grid)
        labels[~brain] = 0
        return labels

    def predict(self, case: Case) -> np.ndarray:
        """Labels 0/1/2/4 (uint8) in ``case.shape``; voxels outside the brain mask are background."""
        pre, index, features = self.prepare(case)
        voxel_labels = self.grid_labels(self.member_scores(features))
        labels = self.restore(pre.geometry, index, voxel_labels, brain_mask(case.images))
        return drop_small_components(labels, self.min_component_fraction)

    def to_dict(self) -> dict:
        return {
            "model": self.name,
            "estimators": self.estimators,
            "thresholds": self.thresholds,
            "lead": self.lead,
            "min_component_fraction": self.min_component_fraction,
            "atlas_levels": self.atlas_levels,
            "feature_names": self.feature_config.feature_names(),
            "features": self.feature_config.to_dict(),
            "preprocess": self.preprocess_config.to_dict(),
            "versions": versions(),
            "info": self.info,
        }

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.to_dict(), path, compress=3)
        return path

    @classmethod
    def load(cls, path: Path | str, name: str | None = None) -> VoxelSegmenter:
        """Read a checkpoint; :class:`CheckpointError` when missing, corrupt, of another model or another code version."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"{path}: ML model checkpoint not found (train it with `python Machine_Learning_Model/train.py`)"
            )
        try:
            data = joblib.load(path)
        except Exception as exc:  # unpickling a corrupt or foreign file fails with arbitrary exception types
            raise CheckpointError(f"{path}: not a readable ML model checkpoint ({type(exc).__name__}: {exc})") from None
        return cls.from_dict(data, str(path), name)

    @classmethod
    def from_dict(cls, data: object, source: str, name: str | None = None) -> VoxelSegmenter:
        """Validate the contents of a checkpoint against the running code (see :meth:`load`)."""
        required = {"model", "estimators", "thresholds", "lead", "min_component_fraction", "atlas_levels",
                    "feature_names", "features", "preprocess", "versions", "info"}
        if not isinstance(data, dict) or not required <= set(data):
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(f"{source}: not an ML model checkpoint (expected keys {sorted(required)}, got {keys})")
        if name is not None and data["model"] != name:
            raise CheckpointError(f"{source}: holds model {data['model']!r}, not {name!r}")
        retrain = f"retrain with `python Machine_Learning_Model/train.py --model {data['model']}`"
        saved, running = data["versions"], versions()
        if not isinstance(saved, dict):
            raise CheckpointError(f"{source}: checkpoint lacks its version record; {retrain}")
        for key in ("format", "features"):
            if saved.get(key) != running[key]:
                raise CheckpointError(
                    f"{source}: checkpoint {key} version {saved.get(key)!r} does not match this code's "
                    f"{running[key]!r}; {retrain}"
                )
        if _minor(str(saved.get("sklearn"))) != _minor(running["sklearn"]):
            raise CheckpointError(
                f"{source}: saved with scikit-learn {saved.get('sklearn')}, running {running['sklearn']}; "
                f"fitted estimators do not carry across scikit-learn versions, {retrain}"
            )
        try:
            feature_config = FeatureConfig.from_dict(data["features"])
            preprocess_config = PreprocessConfig.from_dict(data["preprocess"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: unreadable feature or preprocessing parameters ({exc}); {retrain}") from None
        if preprocess_config.to_dict() != data["preprocess"]:
            raise CheckpointError(
                f"{source}: preprocessing parameters {data['preprocess']} do not match this code's "
                f"PreprocessConfig fields {sorted(preprocess_config.to_dict())}; {retrain}"
            )
        if list(data["feature_names"]) != feature_config.feature_names():
            raise CheckpointError(
                f"{source}: the checkpoint's {len(data['feature_names'])} features differ from the "
                f"{len(feature_config.feature_names())} this code computes; {retrain}"
            )
        members = MEMBERS if data["model"] == "ensemble" else (data["model"],)
        if not (isinstance(data["estimators"], dict) and isinstance(data["thresholds"], dict)
                and set(members) <= set(data["estimators"]) and set(members) <= set(data["thresholds"])):
            raise CheckpointError(f"{source}: model {data['model']!r} needs fitted estimators and thresholds for "
                                f"{', '.join(members)}; {retrain}")
        return cls(data["model"], data["estimators"], data["thresholds"], data["atlas_levels"], preprocess_config,
                   feature_config, data["lead"], data["min_component_fraction"], data["info"])


def load_segmenter(name: str, checkpoint: Path, device: str | None = None,
                   n_jobs: int | None = -1) -> VoxelSegmenter:
    """Loader of the registry (:mod:`brats_app.registry`): load ``name`` from ``checkpoint``.

    ``device`` does not apply (CPU only); ``n_jobs`` sets the KNN query parallelism.
    """
    if name not in MODEL_NAMES:
        raise BratsError(f"Machine_Learning_Model provides {', '.join(MODEL_NAMES)}, not {name!r}")
    segmenter = VoxelSegmenter.load(checkpoint, name)
    segmenter.set_n_jobs(n_jobs)
    return segmenter

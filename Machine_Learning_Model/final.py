"""Final classical checkpoints: fitted on every case, with the settings that the cross-validation tuned.

``brats compare --folds K`` trains the ML models once per fold and tunes, on each fold's validation patients,
every classifier's tumour threshold and every model's smallest kept tumour component. The final checkpoints are
fitted on all the cases and take each tuned value as its median over the folds (the ensemble's tie-breaking
member: the one most folds chose), so no value comes from one case or one fold. Each checkpoint records its
training cases, the per-fold values it was built from and the CV's out-of-fold scores.

    brats compare --data DIR --folds 5 --models ridge,tree,knn,ensemble     # writes results/compare/
    brats train ml --all-cases --cv results --data DIR                      # then the final checkpoints
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path

from brats_core.cases import CaseFiles
from brats_core.config import PreprocessConfig
from brats_core.errors import BratsError
from brats_core.provenance import compare_cv, this_machine, today
from Machine_Learning_Model.features import FeatureConfig
from Machine_Learning_Model.models import MEMBERS, VoxelSegmenter, members_of


def fold_checkpoints(cv_out: Path, name: str) -> list[Path]:
    """``<cv_out>/compare/fold_<k>/<name>/<name>.joblib`` of every fold of the CV
    (:func:`brats_core.provenance.compare_cv`), in fold order."""
    folds = compare_cv(cv_out, name)[1]
    paths = [fold / name / f"{name}.joblib" for fold in folds]
    missing = [str(p) for p in paths if not p.is_file()]
    if len(paths) < 2 or missing:
        raise BratsError(
            f"{Path(cv_out) / 'compare'}: the {name} checkpoints of a cross-validation are missing "
            f"({', '.join(missing) or 'no fold_<k> folders'}); run `brats compare --folds 5` with --out {cv_out}"
        )
    return paths


def cv_settings(cv_out: Path, name: str) -> dict:
    """The tuned settings of model ``name`` over the folds: per-fold values and the values the final model uses."""
    folds = [VoxelSegmenter.load(path, name) for path in fold_checkpoints(cv_out, name)]
    members = folds[0].members
    per_fold = {
        "thresholds": [fold.thresholds for fold in folds],
        "min_component_fraction": [fold.min_component_fraction for fold in folds],
        "lead": [fold.lead for fold in folds],
    }
    leads = [lead for lead in per_fold["lead"] if lead is not None]
    return {
        "folds": len(folds),
        "per_fold": per_fold,
        "thresholds": {m: float(statistics.median(t[m] for t in per_fold["thresholds"])) for m in members},
        "min_component_fraction": float(statistics.median(per_fold["min_component_fraction"])),
        # ties in the vote go to the member most folds chose (the first in MEMBERS order among equals)
        "lead": max(MEMBERS, key=lambda m: (Counter(leads)[m], -MEMBERS.index(m))) if leads else None,
    }


def final_models(models: list[str], files: list[CaseFiles], cv_out: Path, preprocess_config: PreprocessConfig,
                 feature_config: FeatureConfig, samples_per_case: int, knn_max_samples: int, seed: int,
                 log=print) -> dict[str, VoxelSegmenter]:
    """Fit ``models`` on ``files`` and set every tuned value from the CV in ``cv_out`` (nothing is tuned here).

    The settings come from :func:`cv_settings`, the recorded scores from the CV's pooled summaries.
    """
    from Machine_Learning_Model.train import fit_members, training_samples

    settings = {name: cv_settings(cv_out, name) for name in models}
    scores = {name: compare_cv(cv_out, name)[0] for name in models}
    start = time.perf_counter()
    atlas, features, targets = training_samples(files, preprocess_config, feature_config, samples_per_case, seed)
    features_s = time.perf_counter() - start
    members = list(members_of(*models))
    estimators, fit_s = fit_members(members, features, targets, knn_max_samples, seed, log)
    levels = atlas.levels()
    out = {}
    for name in models:
        chosen = settings[name]
        own = members_of(name)
        segmenter = VoxelSegmenter(name, {m: estimators[m] for m in own}, chosen["thresholds"], levels,
                                   preprocess_config, feature_config, lead=chosen["lead"],
                                   min_component_fraction=chosen["min_component_fraction"])
        segmenter.info = {
            "train_case_ids": atlas.case_ids, "val_case_ids": [], "samples": int(len(targets)),
            "samples_per_case": samples_per_case, "knn_max_samples": knn_max_samples, "seed": seed,
            "features_seconds": features_s, "fit_seconds": sum(fit_s[m] for m in own), "tuning_seconds": 0.0,
            "settings_from_cv": chosen, "cv_scores": scores[name], "hardware": this_machine(), "created": today(),
        }
        log(f"{name}: thresholds {_fmt(chosen['thresholds'])}, min component fraction "
            f"{chosen['min_component_fraction']:g}, lead {chosen['lead']} (medians over {chosen['folds']} folds)")
        out[name] = segmenter
    return out


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.4g}" for key, value in values.items())

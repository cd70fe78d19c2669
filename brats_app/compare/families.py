"""How ``brats compare`` trains each model family on one split (the registry's ``fit`` of each model).

Each function takes the names of the family's requested models and the :class:`~brats_app.compare.runner.TrainJob`
and returns ``{name: (segmenter, training seconds or None)}``; the models save their checkpoints under
``job.out_dir/<name>/``.
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

from tqdm import tqdm

from brats_core.cases import load_case
from brats_core.config import PreprocessConfig
from brats_core.errors import BratsError
from brats_core.evaluation import Segmenter

if TYPE_CHECKING:
    from brats_app.compare.runner import TrainJob

#: Smoke-test settings of ``--quick``: tiny models, few samples and steps (numbers meaningless, minutes -> s).
QUICK_ML = {"preprocess_config": PreprocessConfig(size=32), "samples_per_case": 400, "knn_max_samples": 600}
#: SSPP's attention windows (2, 4, 8) need the 8x8 bottleneck of 128 px slices; base width 4 keeps it tiny.
QUICK_DL = {"base_width": 4, "size": 128, "epochs": 1, "max_steps_per_epoch": 2, "batch_size": 4, "workers": 0}

Trained = dict[str, tuple[Segmenter, float | None]]


def train_naive(names: list[str], job: TrainJob) -> Trained:
    from Naive_Model.naive_mean_model import NaiveMeanSegmenter

    segmenter = NaiveMeanSegmenter.fit(load_case(files) for files in job.train_files)
    segmenter.save(job.out_dir / "naive" / "naive.npz")
    return {"naive": (segmenter, segmenter.provenance.train_seconds)}


def train_ml(names: list[str], job: TrainJob) -> Trained:
    from Machine_Learning_Model.train import train

    settings = QUICK_ML if job.options.quick else {}
    trained = train(names, job.train_files, job.val_files, seed=job.options.seed, log=tqdm.write, **settings)
    out = {}
    for name, segmenter in trained.items():
        segmenter.save(job.out_dir / name / f"{name}.joblib")
        segmenter.set_n_jobs(-1)
        out[name] = (segmenter, segmenter.provenance.train_seconds)
    return out


def train_deep(names: list[str], job: TrainJob) -> Trained:
    from brats_app.registry import load_segmenter
    from Deep_Learning_Model.train import run
    from Deep_Learning_Model.training.distributed import DistContext

    (name,) = names
    run_dir = job.out_dir / name / "run"
    if run_dir.exists():  # compare's own previous run: a training folder refuses to be reused
        shutil.rmtree(run_dir)
    overrides: dict = {"model": name, "data": str(job.data), "split": str(job.split_path), "out": str(run_dir),
                       "seed": job.options.seed, "preset": job.options.dl_preset}
    if job.options.quick:
        overrides.update(QUICK_DL)
    if job.options.epochs is not None:
        overrides["epochs"] = job.options.epochs
    if job.options.device is not None:
        overrides["device"] = job.options.device
    if job.options.cache_dir is not None:
        overrides["cache_dir"] = str(job.options.cache_dir)
    start = time.perf_counter()
    run(overrides, DistContext())
    seconds = time.perf_counter() - start
    return {name: (load_segmenter(name, run_dir / "export.pt", device=job.options.device), seconds)}


def train_fusion(names: list[str], job: TrainJob) -> Trained:
    """The fusion of the members trained earlier in this split: nothing more is trained (its time is its members'
    summed) and no post-processing is tuned here (the members' shared one, else none)."""
    from brats_app.registry import spec
    from Deep_Learning_Model.fusion import FusionSegmenter

    (name,) = names
    members = spec(name).members
    missing = [m for m in members if m not in job.trained]
    if missing:
        were, them, rows = ("was", "it", "its row") if len(missing) == 1 else ("were", "them", "their rows")
        raise BratsError(f"{name} fuses {' and '.join(members)} as trained in this run, and {' and '.join(missing)} "
                         f"{were} not trained (add {them} to --models, or see {rows})")
    seconds = [job.trained[m][1] for m in members]
    total = None if None in seconds else float(sum(seconds))
    return {name: (FusionSegmenter([job.trained[m][0] for m in members]), total)}

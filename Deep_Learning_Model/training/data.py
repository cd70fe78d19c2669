"""The slices a run trains and validates on: the saved patient-level split, read through the slice cache.

``--data DIR`` preprocesses the split's train and val cases into the cache (rank 0 builds, the other ranks
wait and open it); ``--from-cache DIR`` opens an existing cache folder (``<cache root>/<key>``) and needs no
NIfTI at all: training slices, validation slices, native-resolution labels and geometry all come from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from brats_core.cache import CacheEntry, build_cache, cache_path, open_cache
from brats_core.cases import open_cases
from brats_core.config import DEFAULT_SPLIT, PreprocessConfig
from brats_core.dataset import SliceDataset
from brats_core.errors import BratsError
from brats_core.split import load_split
from Deep_Learning_Model.training.augment import SliceAugmentation
from Deep_Learning_Model.training.config import TrainConfig
from Deep_Learning_Model.training.distributed import DistContext, barrier


@dataclass
class TrainingData:
    train: SliceDataset
    val: list[CacheEntry]
    preprocess: PreprocessConfig
    split_path: Path

    @property
    def train_ids(self) -> list[str]:
        return [e.case_id for e in self.train.entries]

    @property
    def val_ids(self) -> list[str]:
        return [e.case_id for e in self.val]


def _build_from_nifti(cfg: TrainConfig, ctx: DistContext, split_path: Path) -> tuple[dict, list[CacheEntry]]:
    """Cache the split's train and val cases of ``cfg.data`` (rank 0 writes) and open them on every rank."""
    with open_cases(cfg.data) as cases:
        split = load_split(split_path, [c.case_id for c in cases])
        ids = [*split["train"], *split["val"]]
        preprocess = PreprocessConfig(size=cfg.size)
        if ctx.is_main:
            by_id = {c.case_id: c for c in cases}
            build_cache([by_id[i] for i in ids], preprocess, cfg.cache_dir, progress=True)
    barrier()
    return split, open_cache(cache_path(preprocess, cfg.cache_dir), ids)


def _check_cache_folder(folder: Path) -> None:
    """A cache *root* (holding one folder per preprocessing configuration) is a common mistake: name them."""
    if (folder / "config.json").is_file() or not folder.is_dir():
        return
    keys = sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())
    if keys:
        raise BratsError(
            f"{folder}: this is a cache root; --from-cache takes one of its configuration folders: "
            + ", ".join(str(folder / key) for key in keys)
        )


def load_training_data(cfg: TrainConfig, ctx: DistContext) -> TrainingData:
    """Open (building if needed) the cached train and val cases of ``cfg.split`` (default: the shared split)."""
    split_path = Path(cfg.split) if cfg.split is not None else DEFAULT_SPLIT
    if cfg.from_cache is not None:
        _check_cache_folder(Path(cfg.from_cache))
        split = load_split(split_path)
        entries = open_cache(cfg.from_cache, [*split["train"], *split["val"]])
    elif cfg.data is not None:
        split, entries = _build_from_nifti(cfg, ctx, split_path)
    else:
        raise BratsError("no training data: give --data DIR (NIfTI cases) or --from-cache DIR (a slice cache)")
    if not split["train"]:
        raise BratsError(f"{split_path}: the split has no training case")
    train, val = entries[: len(split["train"])], entries[len(split["train"]) :]
    preprocess = entries[0].config  # one cache folder holds one preprocessing configuration
    if preprocess.size is None:
        raise BratsError(
            f"{entries[0].path.parent}: cache of native-size slices (built with --size 0); training needs one "
            "slice size, rebuild it with `brats cache DATA_DIR --size 128`"
        )
    unlabelled = [f"{e.case_id} ({e.path})" for e in val if e.native_labels is None]
    if unlabelled:
        raise BratsError(f"validation cases without a segmentation: {', '.join(unlabelled)}")
    transform = SliceAugmentation(cfg.augment) if cfg.augment is not None else None
    dataset = SliceDataset(train, context=cfg.context, transform=transform, slices="brain")
    return TrainingData(train=dataset, val=val, preprocess=preprocess, split_path=split_path)

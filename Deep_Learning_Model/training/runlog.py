"""Files a run writes besides its training state: the per-epoch ``log.csv`` and JSON documents."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from brats_core.config import REGIONS
from brats_core.files import atomic_path
from Deep_Learning_Model.serialization import plain_data

#: Columns of ``log.csv``, one row per epoch; validation columns are empty in epochs without validation.
LOG_COLUMNS: tuple[str, ...] = (
    "epoch", "train_loss", "grad_norm", "lr", "samples", "seconds", "slices_per_s",
    *(f"val_{region}_dice" for region in REGIONS), "val_mean_dice",
    *(f"val_{region}_hd95" for region in REGIONS), "val_seconds",
)


def validation_columns(metrics: dict) -> dict[str, float]:
    """The ``val_*`` log columns of a :func:`Deep_Learning_Model.training.validation.validate` result."""
    row = {f"val_{region}_{m}": metrics[region][m] for region in REGIONS for m in ("dice", "hd95")}
    row["val_mean_dice"] = metrics["mean_dice"]
    return row


def write_log(path: Path, rows: list[dict]) -> None:
    """(Re)write ``log.csv`` from the run's history (so a resumed run's log matches its training state)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically; non-finite floats become strings (JSON has no NaN)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plain_data(data, str(path)), indent=2) + "\n")

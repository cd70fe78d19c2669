"""``brats train naive|ml|unet|sspp``: forwards to the training entry point of each model package."""

from __future__ import annotations

import importlib
import sys

TRAINERS: dict[str, str] = {
    "naive": "Naive_Model.naive_mean_model:main",
    "ml": "Machine_Learning_Model.train:main",
    "unet": "Deep_Learning_Model.train:main",
    "sspp": "Deep_Learning_Model.train:main",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TRAINERS:
        print(f"usage: brats train {{{'|'.join(TRAINERS)}}} [options]  (--help after the family for its options)",
              file=sys.stderr)
        return 2
    family, rest = argv[0], argv[1:]
    if family in {"unet", "sspp"}:
        rest = ["--model", family, *rest]
    module_name, func_name = TRAINERS[family].split(":")
    return int(getattr(importlib.import_module(module_name), func_name)(rest) or 0)

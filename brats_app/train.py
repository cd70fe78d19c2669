"""``brats train <family>``: forwards to the training command of the family's package (see the registry)."""

from __future__ import annotations

import sys

from brats_app.registry import families, resolve


def main(argv: list[str]) -> int:
    trainers = {family: specs[0] for family, specs in families().items()}
    if not argv or argv[0] not in trainers:
        print(f"usage: brats train {{{'|'.join(trainers)}}} [options]  (--help after the family for its options)",
              file=sys.stderr)
        return 2
    spec, rest = trainers[argv[0]], argv[1:]
    return int(resolve(spec.trainer)([*spec.trainer_args, *rest]) or 0)

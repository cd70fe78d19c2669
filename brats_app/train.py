"""``brats train <family>``: forwards to the training command of the family's package (see the registry)."""

from __future__ import annotations

import sys

from brats_app.registry import REGISTRY, families, resolve


def usage() -> str:
    """The families one can train and the models each one trains (from the registry)."""
    lines = ["usage: brats train <family> [options]   (`brats train <family> --help` for its options)", "", "families:"]
    lines += [f"  {family:<8} " + ("writes the manifest of " if specs[0].members else "trains ")
              + ", ".join(spec.name for spec in specs) for family, specs in families().items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    trainers = {family: specs[0] for family, specs in families().items()}
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in trainers:
        model = REGISTRY.get(argv[0])
        hint = f" ('{argv[0]}' is trained by `brats train {model.family} --model {argv[0]}`)" if model else ""
        known = ", ".join(trainers)
        print(f"brats train: unknown model family {argv[0]!r}{hint}; choose one of {known}\n\n{usage()}",
              file=sys.stderr)
        return 2
    spec, rest = trainers[argv[0]], argv[1:]
    trainer = resolve(spec.trainer)
    return int((trainer(rest, model=spec.name) if spec.trainer_fixes_model else trainer(rest)) or 0)

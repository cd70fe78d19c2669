"""``brats evaluate``: score predicted label maps ``<case_id>.nii.gz`` against the references' segmentations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from brats_core.errors import BratsError
from brats_core.evaluation import MissingPredictions, evaluate_folders
from brats_core.helptext import PlainHelpFormatter, description


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="brats evaluate", description=description(__doc__), formatter_class=PlainHelpFormatter,
        epilog="Every reference case needs its prediction unless --only-predicted is given.",
    )  # fmt: skip
    parser.add_argument("--pred", required=True, type=Path, help="folder of <case_id>.nii.gz predictions")
    parser.add_argument("--ref", required=True, type=Path, help="cases with segmentations (folder or .zip)")
    parser.add_argument("--out", required=True, type=Path, help="folder for per_case.csv and summary.*")
    parser.add_argument(
        "--only-predicted", action="store_true",
        help="score only the reference cases that have a prediction; list the others (default: all must have one)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        summary = evaluate_folders(args.pred, args.ref, args.out, only_predicted=args.only_predicted)
    except MissingPredictions as exc:
        if len(exc.missing) == exc.n_references:
            raise BratsError(f"{exc}; none of the reference cases has a prediction in {args.pred}") from None
        found = exc.n_references - len(exc.missing)
        raise BratsError(f"{exc}. To score only the {found} predicted case(s), add --only-predicted") from None
    missing = summary.get("missing_predictions") or []
    if missing:
        print(f"brats evaluate: scored {summary['n_cases']} of {summary['n_references']} reference cases; "
              f"no prediction for: {', '.join(missing)}", file=sys.stderr)
    print((args.out / "summary.md").read_text(), end="")
    return 0

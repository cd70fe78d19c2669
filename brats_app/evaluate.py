"""``brats evaluate``: score predicted label maps ``<case_id>.nii.gz`` against the references' segmentations."""

from __future__ import annotations

import argparse
from pathlib import Path

from brats_core.evaluation import evaluate_folders


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="brats evaluate", description="Score predicted label maps <case_id>.nii.gz against references."
    )
    parser.add_argument("--pred", required=True, type=Path, help="folder of <case_id>.nii.gz predictions")
    parser.add_argument("--ref", required=True, type=Path, help="cases with segmentations (folder or .zip)")
    parser.add_argument("--out", required=True, type=Path, help="folder for per_case.csv and summary.*")
    args = parser.parse_args(argv)
    evaluate_folders(args.pred, args.ref, args.out)
    print((args.out / "summary.md").read_text(), end="")
    return 0

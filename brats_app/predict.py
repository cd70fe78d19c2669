"""``brats predict``: write ``<case_id>.nii.gz`` label maps (uint8 0/1/2/4, input shape and affine) with a model.

Inputs may be case folders, folders of cases or zips; cases go in order of their ids, and one that cannot be
read stops the run with its error (the cases before it are written). Under ``torchrun`` (``WORLD_SIZE`` > 1) each process
predicts cases ``RANK, RANK + WORLD_SIZE, ...`` of the sorted list, without a process group.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from brats_app.registry import REGISTRY, load_segmenter, models_of
from brats_core.cases import CaseFiles, open_cases
from brats_core.errors import BratsError
from brats_core.evaluation import Segmenter, segment_case
from brats_core.helptext import PlainHelpFormatter, description


def shard() -> tuple[int, int]:
    """``(rank, world_size)`` from the ``RANK``/``WORLD_SIZE`` environment set by torchrun; ``(0, 1)`` if unset."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError as exc:
        raise BratsError(f"RANK/WORLD_SIZE environment variables must be integers ({exc})") from None
    if world < 1 or not 0 <= rank < world:
        raise BratsError(f"invalid RANK={rank} for WORLD_SIZE={world}")
    return rank, world


def _device(requested: str | None, world: int) -> str | None:
    """Under torchrun with CUDA, each process uses the GPU of its ``LOCAL_RANK``."""
    if world > 1 and requested in (None, "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return requested


def collect_cases(inputs: list[Path], stack: ExitStack) -> list[CaseFiles]:
    """All cases of ``inputs`` sorted by id (zips stay extracted until ``stack`` closes); the same id found
    twice is an error (the outputs would clash)."""
    cases: dict[str, CaseFiles] = {}
    for path in inputs:
        for files in stack.enter_context(open_cases(path)):
            if files.case_id in cases:
                raise BratsError(f"{path}: case id '{files.case_id}' was already found in another input")
            cases[files.case_id] = files
    return [cases[case_id] for case_id in sorted(cases)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="brats predict", description=description(__doc__),
                                     formatter_class=PlainHelpFormatter)
    parser.add_argument("--model", required=True, help=f"model name: {', '.join(REGISTRY)}")
    parser.add_argument("--out", required=True, type=Path, help="output folder for <case_id>.nii.gz")
    parser.add_argument("--checkpoint", type=Path, help="model checkpoint (default: the shipped one); for fusion also a folder of unet.pt and sspp.pt")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="deep models (unet, sspp, fusion); default: CUDA when torch finds a GPU, else CPU. "
                             "The naive and classical models always run on the CPU")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation (models that support it)")
    parser.add_argument("inputs", nargs="+", type=Path, help="case folder, folder of cases or .zip")
    args = parser.parse_args(argv)

    rank, world = shard()
    # The model first: a wrong name or a missing or bad checkpoint is reported before any input is read.
    if args.checkpoint is not None and not args.checkpoint.exists():  # a folder: the fusion's unet.pt + sspp.pt
        raise BratsError(f"{args.checkpoint}: checkpoint not found (--checkpoint)")
    if args.device == "cuda" and args.model not in models_of("Deep_Learning_Model"):
        print(f"brats predict: note: model {args.model!r} runs on the CPU; --device cuda does not apply to it",
              file=sys.stderr)
    options = {"tta": True} if args.tta else {}
    segmenter = load_segmenter(args.model, args.checkpoint, device=_device(args.device, world), **options)
    with ExitStack() as stack:
        return _predict(args, rank, world, collect_cases(args.inputs, stack), segmenter)


def _predict(args: argparse.Namespace, rank: int, world: int, cases: list[CaseFiles], segmenter: Segmenter) -> int:
    mine = cases[rank::world]
    where = f" (rank {rank}/{world})" if world > 1 else ""
    start = time.perf_counter()
    for files in tqdm(mine, desc=f"predict {args.model}{where}", unit="case", disable=not mine):
        segment_case(segmenter, files, args.out / f"{files.case_id}.nii.gz", score=False)
    seconds = time.perf_counter() - start
    per_case = f", {seconds / len(mine):.2f} s per case" if mine else ""
    print(
        f"{args.model}{where}: wrote {len(mine)} of {len(cases)} case(s) to {args.out} in {seconds:.1f} s{per_case}"
    )
    return 0

"""Tune the post-processing of a deep model on its out-of-fold predictions and record it in the final exports.

    python -m Deep_Learning_Model.tune_postprocess --data DIR --compare-dir results/compare --model sspp \
        --record Deep_Learning_Model/checkpoints/sspp.pt [--out results/postprocess_sspp.json]
    python -m Deep_Learning_Model.tune_postprocess --data DIR --fold fold1/split.json fold1/export.pt ...

Every fold's export predicts the test cases of its split (cases it never saw), without post-processing; the
predictions, the references and the spacings go to :func:`brats_core.postprocess.tune_postprocess`, which picks
the smallest-component and small-ET volumes with the best mean Dice. ``--compare-dir`` takes the folds of
``brats compare --folds K`` (``fold_<k>/split.json`` and ``fold_<k>/<model>/run/export.pt``; ``--model fusion``
fuses that fold's unet and sspp exports). The report (JSON) holds the Dice of every pair of volumes; ``--record``
writes the chosen parameters into the given exports, whose predictor then applies them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from brats_core.cases import find_cases, load_case
from brats_core.errors import BratsError
from brats_core.postprocess import tune_postprocess
from brats_core.split import load_split
from Deep_Learning_Model.export import record_postprocess
from Deep_Learning_Model.fusion import FUSED, raw_segmenter

MODELS: tuple[str, ...] = ("unet", "sspp", "fusion")


def compare_folds(compare_dir: Path, model: str) -> list[tuple[Path, list[Path]]]:
    """``(split.json, exports)`` of each ``fold_<k>`` of a ``brats compare --folds`` output folder."""
    folds = sorted(compare_dir.glob("fold_*/split.json"), key=lambda p: int(p.parent.name.split("_")[-1]))
    if not folds:
        raise BratsError(f"{compare_dir}: no fold_<k>/split.json (the output of `brats compare --folds K`)")
    names = FUSED if model == "fusion" else (model,)
    return [(split, [split.parent / name / "run" / "export.pt" for name in names]) for split in folds]


def out_of_fold(data: Path, folds: list[tuple[Path, list[Path]]], device: str | None = None,
                tta: bool = False) -> list[tuple]:
    """``(prediction, reference, spacing)`` of every test case of every fold, predicted by its fold's model."""
    files = {case.case_id: case for case in find_cases(data)}
    cases, seen = [], set()
    for split_path, exports in folds:
        test = load_split(split_path)["test"]
        missing = [i for i in test if i not in files] + [str(p) for p in exports if not p.is_file()]
        if missing:
            raise BratsError(f"{split_path}: not found: {', '.join(missing)}")
        repeated = sorted(seen & set(test))
        if repeated:
            raise BratsError(f"{split_path}: case(s) {', '.join(repeated)} are already test cases of another fold")
        seen |= set(test)
        segmenter = raw_segmenter(exports, device, tta)
        for case_id in tqdm(test, desc=split_path.parent.name, unit="case"):
            case = load_case(files[case_id])
            if case.seg is None:
                raise BratsError(f"{files[case_id].images['t1'].parent}: no segmentation to tune on")
            cases.append((segmenter.predict(case), case.seg, case.spacing))
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m Deep_Learning_Model.tune_postprocess",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder (or .zip) of the cases with seg")
    parser.add_argument("--compare-dir", type=Path, help="output folder of `brats compare --folds K` (…/compare)")
    parser.add_argument("--model", choices=MODELS, default="sspp", help="with --compare-dir (default sspp)")
    parser.add_argument("--fold", nargs="+", action="append", metavar=("SPLIT", "EXPORT"),
                        help="a fold's split JSON and its export(s) (two for fusion); repeat per fold")
    parser.add_argument("--record", type=Path, nargs="*", default=[], help="exports to record the result in")
    parser.add_argument("--out", type=Path, help="write the tuning report (JSON) here")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--tta", action="store_true", help="predict with test-time flips (as served)")
    args = parser.parse_args(argv)
    if (args.compare_dir is None) == (args.fold is None):
        parser.error("give either --compare-dir or --fold")
    if args.fold and any(len(f) < 2 for f in args.fold):
        parser.error("--fold takes a split JSON and at least one export")
    try:
        folds = compare_folds(args.compare_dir, args.model) if args.compare_dir else [
            (Path(f[0]), [Path(p) for p in f[1:]]) for f in args.fold]
        config, report = tune_postprocess(out_of_fold(args.data, folds, args.device, args.tta))
        for path in args.record:
            record_postprocess(path, config, report)
    except BratsError as exc:
        print(f"tune_postprocess: error: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(report, indent=1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(f"{report['cases']} out-of-fold cases: mean Dice {report['mean_dice_without']:.4f} without, "
          f"{report['mean_dice_best']:.4f} with min_component_mm3={config.min_component_mm3:g}, "
          f"et_min_mm3={config.et_min_mm3:g}, keep_largest_component={config.keep_largest_component}"
          + (f"; recorded in {', '.join(map(str, args.record))}" if args.record else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

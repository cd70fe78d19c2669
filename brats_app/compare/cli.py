"""``brats compare`` command: the comparison of every model (:mod:`brats_app.compare`) and its options."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from brats_app.compare import __doc__ as PACKAGE_DOC
from brats_app.compare.folds import pool, resolve_split
from brats_app.compare.report import machine, table, write_csv, write_figures, write_markdown
from brats_app.compare.runner import ModelRun, Options, run_split
from brats_app.registry import REGISTRY
from brats_core.cases import find_cases
from brats_core.config import RESULTS_DIR
from brats_core.helptext import PlainHelpFormatter, description
from brats_core.split import fold_splits, save_split

DESCRIPTION = description(PACKAGE_DOC)


def compare(data: Path, split_path: Path | None = None, models: Sequence[str] = tuple(REGISTRY),
            out: Path = RESULTS_DIR, options: Options = Options(), use_shipped: bool = False,
            folds: int | None = None, command: str = "brats compare") -> dict[str, ModelRun]:
    """Run the comparison and write every output (see module docstring); returns the final row of each model."""
    models = [name for name in REGISTRY if name in models]
    work = out / "compare"
    files = {case.case_id: case for case in find_cases(data)}
    split_path, split, split_text = resolve_split(split_path, files, work, options.seed)
    header = {
        "Command": f"`{command}`",
        "Date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "Machine": machine(),
        "Data": f"{Path(data).name} ({len(files)} cases found)",
        "Split": split_text if folds is None or len(split["folds"]) == folds else
        f"{split_text}; its {len(split['folds'])} folds replaced by a fresh {folds}-fold patient-level partition "
        f"(seed {options.seed})",
        "Models": "shipped checkpoints (--use-shipped)" if use_shipped
        else "trained by this command" + (" in quick mode (--quick: tiny smoke-test models)" if options.quick else ""),
    }
    if folds is None:
        runs, sample = run_split(data, split_path, split, files, models, work, options, use_shipped)
        header["Test cases"] = f"{len(split['test'])}: {', '.join(split['test'])}"
        tables, fold_runs = [("test", runs)], None
        what = f"{len(split['test'])} test case{'s' if len(split['test']) > 1 else ''}"
    else:
        fold_runs, sample = [], None
        splits = fold_splits(split, folds, options.seed)
        for stale in work.glob("fold_*"):  # an earlier run's extra folds would pass for folds of this one
            if not (stale.name[5:].isdigit() and 1 <= int(stale.name[5:]) <= folds):
                shutil.rmtree(stale)
        for f, fold_split in enumerate(splits):
            tqdm.write(f"compare: fold {f + 1} of {folds}", file=sys.stderr)
            fold_dir = work / f"fold_{f + 1}"
            fold_path = save_split(fold_split, fold_dir / "split.json")
            fold, sample = run_split(data, fold_path, fold_split, files, models, fold_dir, options, False, sample)
            fold_runs.append(fold)
        runs = pool(fold_runs, models, work)
        n_cases = sum(len(fold_split["test"]) for fold_split in splits)
        header["Test cases"] = f"{folds}-fold cross-validation, each of the {n_cases} cases tested once"
        tables = [(str(f + 1), fold) for f, fold in enumerate(fold_runs)] + [("all", runs)]
        what = f"{folds}-fold cross-validation ({n_cases} cases)"
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(out, runs, sample, what)
    write_csv(out / "compare.csv", tables)
    write_markdown(out / "compare.md", runs, header, fold_runs, figures)
    return runs


def main(argv: list[str]) -> int:
    from Deep_Learning_Model.training.config import PRESETS

    parser = argparse.ArgumentParser(prog="brats compare", description=DESCRIPTION, formatter_class=PlainHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="folder of BraTS cases with seg (a .zip: extract it first)")
    parser.add_argument("--split", type=Path, help="patient-level split JSON (default: splits/brats_dev.json when "
                        "the data holds its cases, else a fresh split written to <out>/compare/split.json)")
    parser.add_argument("--use-shipped", action="store_true", help="load the shipped checkpoints instead of training")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder (default results/, whose committed reports this replaces)")
    parser.add_argument("--models", default=",".join(REGISTRY), help=f"comma-separated subset of {','.join(REGISTRY)}")
    parser.add_argument("--folds", type=int, help="K-fold patient-level cross-validation instead of the test split")
    parser.add_argument("--quick", action="store_true", help="tiny models and few samples/steps: a smoke test")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device of the deep models (default: auto)")
    parser.add_argument("--preset", default="default", choices=tuple(PRESETS),
                        help="training preset of the deep models (default: default)")
    parser.add_argument("--epochs", type=int, help="override the deep models' number of epochs")
    parser.add_argument("--cache-dir", type=Path, help="slice cache root of the deep models (default: .cache/slices)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training (and of a fresh split)")
    args = parser.parse_args(argv)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(models) - set(REGISTRY))
    if unknown or not models:
        parser.error(f"--models: unknown {unknown}; choose from {','.join(REGISTRY)}" if unknown else "--models is empty")
    if args.folds is not None and args.use_shipped:
        parser.error("--folds trains a model per fold; it cannot use the shipped checkpoints")
    if args.folds is not None and args.folds < 2:
        parser.error("--folds must be at least 2")
    options = Options(quick=args.quick, device=args.device, dl_preset=args.preset, epochs=args.epochs,
                      cache_dir=args.cache_dir, seed=args.seed)
    start = time.perf_counter()
    runs = compare(args.data, args.split, models, args.out, options, args.use_shipped, args.folds,
                   command=shlex.join(["brats", "compare", *argv]))
    print("\n".join(table(runs)))
    print(f"\nwrote {args.out / 'compare.md'}, compare.csv and the figures in {time.perf_counter() - start:.0f} s")
    failed = [name for name, run in runs.items() if run.error is not None]
    if failed:
        print(f"brats compare: {len(failed)} model(s) failed: {', '.join(failed)} (see their rows)", file=sys.stderr)
        return 1
    return 0

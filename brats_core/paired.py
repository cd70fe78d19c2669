"""``brats paired``: per-case differences between two reports of the same cases (``B - A``, per region).

Two models scored on the same cases (two ``per_case.csv`` of :func:`brats_core.evaluation.write_reports`, such as
two rows of a cross-validation ablation) differ by less than their standard deviations suggest, because the hard
cases are hard for both. The paired view subtracts per case: mean difference, the standard error of that mean,
a 95 % t interval, and on how many cases ``B`` is better, tied or worse (for HD95 lower is better). An interval
that holds 0 means these cases cannot tell the two apart. One that excludes 0 is not yet a difference between
two recipes: the interval treats both models as fixed, while a training rerun with another seed moves every
case of a fold together. Compare two seeds of one recipe with this same command to see that noise floor, and
give each side several reports (``--a A1 A2 --b B1 B2``: one per training seed) to compare recipes with every
case's score averaged over the seeds of its side first.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from pathlib import Path

from scipy import stats

from brats_core.config import REGIONS
from brats_core.errors import BratsError
from brats_core.helptext import PlainHelpFormatter, description
from brats_core.split import load_split

#: Metrics compared, and whether higher is better.
HIGHER_IS_BETTER: dict[str, bool] = {"dice": True, "hd95": False}


def read_per_case(path: Path | str) -> dict[str, dict[str, float]]:
    """``{case_id: {"WT_dice": ..., ...}}`` from a ``per_case.csv``; BratsError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise BratsError(f"{path}: no such report (a per_case.csv of brats evaluate / compare / cv score)")
    columns = [f"{region}_{metric}" for region in REGIONS for metric in HIGHER_IS_BETTER]
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ["case_id", *columns] if c not in (reader.fieldnames or [])]
        if missing:
            raise BratsError(f"{path}: not a per-case report, column(s) {', '.join(missing)} missing")
        rows: dict[str, dict[str, float]] = {}
        for line, row in enumerate(reader, start=2):
            case = row["case_id"]
            if case in rows:
                raise BratsError(f"{path}: case {case} appears twice (line {line})")
            try:
                rows[case] = {c: float(row[c]) for c in columns}
            except (TypeError, ValueError):
                raise BratsError(f"{path}: line {line} ({case}) has a score that is not a number") from None
            if not all(math.isfinite(v) for v in rows[case].values()):
                raise BratsError(f"{path}: line {line} ({case}) has a score that is not finite")
    return rows


def _same_cases(a: dict, b: dict, problem: str, name_a: str = "A", name_b: str = "B") -> None:
    """BratsError ``problem`` listing the cases only in ``a`` and only in ``b``, unless both hold the same."""
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise BratsError(f"{problem}: only in {name_a} {only_a or '-'}, only in {name_b} {only_b or '-'}")


def mean_per_case(reports: list[dict[str, dict[str, float]]], names: list[str]) -> dict[str, dict[str, float]]:
    """Every case's scores averaged over ``reports`` (say one per training seed of a recipe); they must hold the
    same cases (BratsError naming the first report that does not)."""
    if not reports:
        raise BratsError("no report to average")
    for report, name in zip(reports[1:], names[1:], strict=True):
        _same_cases(reports[0], report, f"{name} does not hold the cases of {names[0]}", names[0], name)
    return {case: {col: statistics.fmean(r[case][col] for r in reports) for col in reports[0][case]}
            for case in reports[0]}  # fmt: skip


def paired_differences(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]],
                       source: str = "the two reports") -> dict:
    """Per region and metric of :data:`HIGHER_IS_BETTER`: ``mean`` of ``B - A``, its ``se``, ``ci95``, and
    ``better`` / ``tied`` / ``worse`` counts of ``B``. Both reports must hold the same cases (at least two)."""
    _same_cases(a, b, f"{source} do not hold the same cases")
    if len(a) < 2:
        raise BratsError(f"{source}: a paired comparison needs at least 2 cases, they hold {len(a)}")
    cases = sorted(a)
    result: dict = {"n_cases": len(cases)}
    for region in REGIONS:
        for metric, higher in HIGHER_IS_BETTER.items():
            col = f"{region}_{metric}"
            diff = [b[c][col] - a[c][col] for c in cases]
            mean, se = statistics.fmean(diff), statistics.stdev(diff) / math.sqrt(len(diff))
            half = float(stats.t.ppf(0.975, len(diff) - 1)) * se
            sign = 1 if higher else -1
            result[col] = {
                "mean": mean, "se": se, "ci95": [mean - half, mean + half],
                "better": sum(sign * d > 0 for d in diff), "tied": sum(d == 0 for d in diff),
                "worse": sum(sign * d < 0 for d in diff),
            }  # fmt: skip
    return result


def markdown(result: dict, name_a: str, name_b: str) -> str:
    """The comparison as a Markdown table, one row per region and metric."""
    lines = [
        f"B = {name_b} minus A = {name_a}, per case over {result['n_cases']} cases "
        "(for HD95 lower is better, so B better means a negative difference).",
        "",
        "| | mean B - A | standard error | 95 % interval | B better / tied / worse |",
        "| --- | --- | --- | --- | --- |",
    ]
    for region in REGIONS:
        for metric, digits in (("dice", 3), ("hd95", 1)):
            r = result[f"{region}_{metric}"]
            mean, (low, high) = r["mean"], r["ci95"]  # a sign kept on a rounded 0: -0.000 is below 0
            lines.append(f"| {region} {'Dice' if metric == 'dice' else 'HD95 (mm)'} | {mean:+.{digits}f} | "
                         f"{r['se']:.{digits}f} | {low:+.{digits}f} to {high:+.{digits}f} | "
                         f"{r['better']} / {r['tied']} / {r['worse']} |")
    return "\n".join(lines) + "\n"


def _side(paths: list[Path]) -> tuple[dict[str, dict[str, float]], str]:
    """One side's per-case scores (averaged over its reports) and its name in the table."""
    scores = mean_per_case([read_per_case(p) for p in paths], [str(p) for p in paths])
    name = str(paths[0]) if len(paths) == 1 else f"the mean per case of {', '.join(map(str, paths))}"
    return scores, name


def restrict(scores: dict[str, dict[str, float]], cases: list[str], name: str, source: str) -> dict:
    """``scores`` of ``cases`` only; BratsError naming ``name`` and the cases it lacks."""
    missing = sorted(set(cases) - set(scores))
    if missing:
        raise BratsError(f"{name} lacks {len(missing)} of the {len(cases)} cases of {source}: {', '.join(missing)}")
    return {case: scores[case] for case in cases}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="brats paired", description=description(__doc__),
                                     formatter_class=PlainHelpFormatter,
                                     usage="brats paired A B [--split FILE] [--json FILE] | --a A [A ...] --b B [B ...] "
                                           "[--split FILE] [--json FILE]")
    parser.add_argument("reports", type=Path, nargs="*", metavar="A B",
                        help="per_case.csv of A (the baseline) and of B (the change)")
    parser.add_argument("--a", type=Path, nargs="+", metavar="A", help="instead of the two reports: A's "
                        "reports (one per training seed), averaged per case")
    parser.add_argument("--b", type=Path, nargs="+", metavar="B", help="B's reports, averaged per case")
    parser.add_argument("--split", type=Path, help="compare only this split's test cases (e.g. the patients a "
                        "checkpoint never saw); both sides must hold them")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.a or args.b:
        if args.reports or not (args.a and args.b):
            parser.error("give either two reports A B, or both --a and --b (one or more reports each)")
        paths_a, paths_b = args.a, args.b
    elif len(args.reports) != 2:
        parser.error(f"expected two reports A B, got {len(args.reports)}")
    else:
        (a_path, b_path) = args.reports
        paths_a, paths_b = [a_path], [b_path]
    (a, name_a), (b, name_b) = _side(paths_a), _side(paths_b)
    if args.split:
        test = load_split(args.split)["test"]
        a, b = (restrict(s, test, n, f"{args.split}'s test") for s, n in ((a, name_a), (b, name_b)))
    result = paired_differences(a, b, f"{name_a} and {name_b}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        saved = {"a": str(paths_a[0]), "b": str(paths_b[0])} if len(paths_a) == len(paths_b) == 1 else \
            {"a": [str(p) for p in paths_a], "b": [str(p) for p in paths_b]}
        if args.split:
            saved["split"] = str(args.split)
        args.json.write_text(json.dumps({**saved, **result}, indent=2) + "\n")
    print(markdown(result, name_a, name_b), end="")
    return 0

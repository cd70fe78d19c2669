"""``brats paired``: per-case differences of two reports, on known numbers, from real report files, with each
side averaged over several reports (training seeds), and every bad report or call it is given (missing, not a
report, a case twice, a score that is not a number or not finite, different cases, too few cases, reports of
one side on different cases, sides given both ways or only one)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from brats_app.cli import main as brats
from brats_core.config import REGIONS
from brats_core.errors import BratsError
from brats_core.evaluation import SCORE_COLUMNS, write_reports
from brats_core.paired import markdown, mean_per_case, paired_differences, read_per_case


def _rows(dice: dict[str, float], hd95: dict[str, float]) -> list[dict]:
    """Full report rows (every column of write_reports) with the same Dice and HD95 in every region."""
    return [{**{c: 0.0 for c in SCORE_COLUMNS}, "case_id": case,
             **{f"{r}_dice": dice[case] for r in REGIONS}, **{f"{r}_hd95": hd95[case] for r in REGIONS}}
            for case in dice]  # fmt: skip


def _write(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _scores(values: dict[str, float], hd95: float = 5.0) -> dict[str, dict[str, float]]:
    return {case: {**{f"{r}_dice": v for r in REGIONS}, **{f"{r}_hd95": hd95 for r in REGIONS}}
            for case, v in values.items()}  # fmt: skip


def test_known_differences_standard_error_interval_and_counts(tmp_path: Path) -> None:
    a = write_reports(_rows({"p1": 0.5, "p2": 0.6, "p3": 0.7, "p4": 0.8}, {"p1": 10, "p2": 10, "p3": 4, "p4": 4}),
                      tmp_path / "a")
    assert a["n_cases"] == 4
    write_reports(_rows({"p1": 0.6, "p2": 0.6, "p3": 0.9, "p4": 0.7}, {"p1": 5, "p2": 10, "p3": 6, "p4": 4}),
                  tmp_path / "b")
    result = paired_differences(read_per_case(tmp_path / "a/per_case.csv"), read_per_case(tmp_path / "b/per_case.csv"))
    dice = result["WT_dice"]
    # B - A = +0.1, 0, +0.2, -0.1: mean 0.05, sd sqrt(0.05/3), t(0.975, 3) = 3.182446
    assert dice["mean"] == pytest.approx(0.05)
    assert dice["se"] == pytest.approx(math.sqrt(0.05 / 3) / 2)
    assert dice["ci95"] == pytest.approx([0.05 - 3.182446 * dice["se"], 0.05 + 3.182446 * dice["se"]], abs=1e-6)
    assert (dice["better"], dice["tied"], dice["worse"]) == (2, 1, 1)
    hd = result["TC_hd95"]  # B - A = -5, 0, +2, 0: lower is better, so one better, two tied, one worse
    assert hd["mean"] == pytest.approx(-0.75)
    assert (hd["better"], hd["tied"], hd["worse"]) == (1, 2, 1)
    table = markdown(result, "A", "B")
    assert "| WT Dice | +0.050 |" in table and "| TC HD95 (mm) | -0.8 |" in table and "2 / 1 / 1" in table


def test_a_rounded_zero_keeps_its_sign() -> None:
    """An interval that ends just below 0 must not read as touching it."""
    a = {"p1": 0.5, "p2": 0.5, "p3": 0.5, "p4": 0.5}
    result = paired_differences(_scores(a), _scores({"p1": 0.4997, "p2": 0.4997, "p3": 0.4996, "p4": 0.4996}))
    table = markdown(result, "A", "B")
    assert "| WT Dice | -0.000 |" in table and "to -0.000 |" in table and "+0.000" not in table


def test_cli_prints_the_table_and_writes_json(tmp_path: Path, capsys) -> None:
    write_reports(_rows({"p1": 0.5, "p2": 0.7}, {"p1": 3, "p2": 3}), tmp_path / "a")
    write_reports(_rows({"p1": 0.7, "p2": 0.8}, {"p1": 2, "p2": 3}), tmp_path / "b")
    out = tmp_path / "deep" / "paired.json"
    assert brats(["paired", str(tmp_path / "a/per_case.csv"), str(tmp_path / "b/per_case.csv"), "--json", str(out)]) == 0
    assert "| ET Dice | +0.150 |" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["n_cases"] == 2 and saved["ET_dice"]["better"] == 2 and saved["b"].endswith("b/per_case.csv")


def test_split_restricts_both_sides_to_its_test_cases(tmp_path: Path, capsys) -> None:
    """A's report holds more cases than B's; --split compares the patients of its test list only."""
    write_reports(_rows({"p1": 0.5, "p2": 0.7, "p3": 0.1, "p9": 0.2}, dict.fromkeys(("p1", "p2", "p3", "p9"), 3)),
                  tmp_path / "a")
    write_reports(_rows({"p1": 0.7, "p2": 0.8, "p3": 0.9}, dict.fromkeys(("p1", "p2", "p3"), 3)), tmp_path / "b")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"seed": 0, "train": ["p3", "p9"], "val": [], "test": ["p1", "p2"],
                                 "folds": [["p1", "p2", "p3", "p9"]]}))
    reports = [str(tmp_path / "a/per_case.csv"), str(tmp_path / "b/per_case.csv")]
    assert brats(["paired", *reports, "--split", str(split), "--json", str(tmp_path / "r.json")]) == 0
    assert "over 2 cases" in capsys.readouterr().out
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["WT_dice"]["mean"] == pytest.approx(0.15) and saved["split"] == str(split)
    split.write_text(json.dumps({"seed": 0, "train": ["p3"], "val": [], "test": ["p1", "p9"],
                                 "folds": [["p1", "p3", "p9"]]}))
    assert brats(["paired", *reports, "--split", str(split)]) == 1
    assert f"b/per_case.csv lacks 1 of the 2 cases of {split}'s test: p9" in capsys.readouterr().err


HEADER = ["case_id", *(f"{r}_{m}" for r in REGIONS for m in ("dice", "hd95"))]


@pytest.mark.parametrize(("header", "rows", "problem"), [
    (["case_id", "WT_dice"], [["p1", 0.5]], "column(s) WT_hd95, TC_dice"),
    (HEADER, [["p1", *[0.5] * 6], ["p1", *[0.5] * 6]], "case p1 appears twice (line 3)"),
    (HEADER, [["p1", "high", *[0.5] * 5]], "line 2 (p1) has a score that is not a number"),
    (HEADER, [["p1", 0.5, 0.5]], "line 2 (p1) has a score that is not a number"),
    (HEADER, [["p1", *[0.5] * 5, "nan"]], "line 2 (p1) has a score that is not finite"),
], ids=["columns", "twice", "text", "short-row", "nan"])  # fmt: skip
def test_bad_report_is_named_with_its_problem(tmp_path: Path, header, rows, problem) -> None:
    path = _write(tmp_path / "per_case.csv", header, rows)
    with pytest.raises(BratsError, match=rf"{path}: .*{__import__('re').escape(problem)}"):
        read_per_case(path)


def test_missing_report_is_named(tmp_path: Path, capsys) -> None:
    assert brats(["paired", str(tmp_path / "nope.csv"), str(tmp_path / "nope.csv")]) == 1
    assert f"brats paired: error: {tmp_path / 'nope.csv'}: no such report" in capsys.readouterr().err


def test_reports_of_different_cases_or_too_few_are_refused() -> None:
    with pytest.raises(BratsError, match=r"not hold the same cases: only in A \['p3'\], only in B \['p9'\]"):
        paired_differences(_scores({"p1": 1, "p2": 1, "p3": 1}), _scores({"p1": 1, "p2": 1, "p9": 1}))
    with pytest.raises(BratsError, match="at least 2 cases, they hold 1"):
        paired_differences(_scores({"p1": 1}), _scores({"p1": 0.5}))


def test_each_side_averaged_over_its_seeds_per_case(tmp_path: Path, capsys) -> None:
    """``--a A1 A2 --b B1 B2``: every case's score is the mean over its side's reports before the subtraction."""
    for name, dice, hd in (("a1", {"p1": 0.4, "p2": 0.6, "p3": 0.8}, 10), ("a2", {"p1": 0.6, "p2": 0.6, "p3": 0.6}, 6),
                           ("b1", {"p1": 0.9, "p2": 0.7, "p3": 0.7}, 4), ("b2", {"p1": 0.7, "p2": 0.5, "p3": 0.9}, 4)):
        write_reports(_rows(dice, dict.fromkeys(dice, hd)), tmp_path / name)
    mean = mean_per_case([read_per_case(tmp_path / f"a{i}/per_case.csv") for i in (1, 2)], ["a1", "a2"])
    assert mean["p1"]["WT_dice"] == pytest.approx(0.5) and mean["p3"]["ET_hd95"] == pytest.approx(8.0)
    out = tmp_path / "seeds.json"
    argv = ["paired", "--a", *(str(tmp_path / f"a{i}/per_case.csv") for i in (1, 2)),
            "--b", *(str(tmp_path / f"b{i}/per_case.csv") for i in (1, 2)), "--json", str(out)]
    assert brats(argv) == 0
    # means per case: A 0.5, 0.6, 0.7 and B 0.8, 0.6, 0.8, so B - A = +0.3, 0, +0.1; HD95 8 -> 4 on every case
    table = capsys.readouterr().out
    assert "B = the mean per case of " in table and "| TC Dice | +0.133 |" in table and "| WT Dice | +0.133 | 0.088 |" in table and "2 / 1 / 0" in table
    saved = json.loads(out.read_text())
    assert saved["WT_dice"]["mean"] == pytest.approx(0.4 / 3) and (saved["WT_dice"]["better"], saved["WT_dice"]["tied"]) == (2, 1)
    assert saved["ET_hd95"]["mean"] == pytest.approx(-4.0) and len(saved["a"]) == 2 and saved["b"][1].endswith("b2/per_case.csv")


def test_reports_of_one_side_on_different_cases_are_named() -> None:
    with pytest.raises(BratsError, match=r"seed1.csv does not hold the cases of seed0.csv: only in seed0.csv \['p2'\]"):
        mean_per_case([_scores({"p1": 1, "p2": 1}), _scores({"p1": 1, "p9": 1})], ["seed0.csv", "seed1.csv"])


@pytest.mark.parametrize(("argv", "problem"), [
    (["a.csv"], "expected two reports A B, got 1"),
    (["a.csv", "b.csv", "c.csv"], "expected two reports A B, got 3"),
    (["--a", "a.csv", "a2.csv"], "give either two reports A B, or both --a and --b"),
    (["a.csv", "--a", "a.csv", "--b", "b.csv"], "give either two reports A B, or both --a and --b"),
], ids=["one", "three", "only-a", "both-ways"])  # fmt: skip
def test_sides_must_be_given_one_way(argv: list[str], problem: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        brats(["paired", *argv])
    assert exit_.value.code == 2 and problem in capsys.readouterr().err

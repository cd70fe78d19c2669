"""README's "shipped models at a glance" table is the committed CV reports, number for number (so a new CV that
replaces a checkpoint cannot leave the headline table behind)."""

from __future__ import annotations

import csv
import json
import re
import statistics

import pytest

from brats_core.config import REPO_ROOT

#: Row of the table -> the folder of the pooled out-of-fold reports it is read from (as served).
ROWS = {
    "Naive (mean atlas)": "results/compare/naive",
    "Ensemble of Ridge, tree and KNN (majority vote)": "results/compare/ensemble",
    "U-Net (`unet.pt`)": "results/cv27_cpu/unet/cv/postprocessed",
    "U-Net + SSPP (`sspp.pt`, the API's default)": "results/cv27_cpu/sspp/cv/postprocessed",
    "Fusion of the two (`fusion.json`, on request)": "results/cv27_cpu/fusion/cv/postprocessed",
}


def _table() -> dict[str, list[str]]:
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("**The shipped models at a glance.**", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in block.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = [re.sub(r"\*\*", "", c) for c in cells[1:]]
    return rows


@pytest.mark.parametrize("name", list(ROWS))
def test_the_at_a_glance_row_is_the_committed_cv(name: str) -> None:
    folder = REPO_ROOT / ROWS[name]
    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "per_case.csv", newline="") as handle:
        cases = list(csv.DictReader(handle))
    regions = ("WT", "TC", "ET")
    expected = [
        " / ".join(f"{summary[r]['dice']['mean']:.3f}" for r in regions),
        f"{min(float(c['WT_dice']) for c in cases):.3f}",
        " / ".join(f"{statistics.median(float(c[f'{r}_dice']) for c in cases):.3f}" for r in regions),
        f"{summary['WT']['hd95']['mean']:.1f}",
    ]
    assert summary["n_cases"] == len(cases) == 27
    assert _table()[name] == expected

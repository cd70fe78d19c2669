"""``benchmarks/run_all.py``: one JSON summary line, failures recorded, ``--only`` and ``--quick`` passed on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from brats_core.config import REPO_ROOT

RUN_ALL = REPO_ROOT / "benchmarks" / "run_all.py"
SCRIPTS = {
    "ok": 'print("warming up")\nprint(\'{"benchmark": "ok", "value": 1}\')\n',
    "quick": (
        "import argparse, json\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('--quick', action='store_true')\n"
        "print(json.dumps({'benchmark': 'quick', 'quick': parser.parse_args().quick}))\n"
    ),
    "crash": "raise SystemExit(3)\n",
    "no_json": 'print("just text")\n',
    "slow": "import sys, time\nif '--help' not in sys.argv:\n    time.sleep(30)\n",  # answers --help at once
}


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("benchmarks")
    for name, source in SCRIPTS.items():
        (folder / f"{name}.py").write_text(source)
    (folder / "_common.py").write_text("raise SystemExit(5)\n")  # a helper module, not a benchmark
    return folder


def _run(bench_dir: Path, *args: str) -> tuple[int, dict, str]:
    result = subprocess.run([sys.executable, str(RUN_ALL), "--dir", str(bench_dir), *args], capture_output=True,
                            text=True, timeout=120, check=False)
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1]), result.stdout


def test_failures_are_recorded_and_the_others_run(bench_dir: Path) -> None:
    code, summary, stdout = _run(bench_dir, "--quick", "--timeout", "3")
    assert code == 1 and summary["benchmark"] == "run_all" and summary["quick"] is True
    assert summary["results"] == {"ok": {"benchmark": "ok", "value": 1}, "quick": {"benchmark": "quick", "quick": True}}
    assert summary["failed"] == {
        "crash": "exit status 3",
        "no_json": "the last stdout line is not a JSON object (Expecting value: line 1 column 1 (char 0))",
        "slow": "timed out after 3 s",
    }
    assert set(summary["seconds"]) == set(SCRIPTS)  # _common.py is not run
    assert "warming up" in stdout  # the scripts' output is passed through


def test_only_runs_the_named_benchmarks_without_quick(bench_dir: Path) -> None:
    code, summary, _ = _run(bench_dir, "--only", "quick", "--only", "ok")
    assert code == 0 and summary["failed"] == {}
    assert summary["results"]["quick"] == {"benchmark": "quick", "quick": False} and set(summary["results"]) == {"quick", "ok"}


def test_unknown_benchmark_is_an_error(bench_dir: Path) -> None:
    result = subprocess.run([sys.executable, str(RUN_ALL), "--dir", str(bench_dir), "--only", "nope"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and "unknown benchmark(s) ['nope']" in result.stderr
    assert "available: crash, no_json, ok, quick, slow" in result.stderr

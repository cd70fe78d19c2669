"""Run every benchmark script of this folder and collect their results in one JSON line (``make bench``).

Each ``benchmarks/<name>.py`` (except this one and the helper modules ``_*.py``) runs in its own process with
this interpreter; its output is passed through, and its last stdout line must be one JSON object. A script
that fails, times out or ends without a JSON line is recorded with its error and the others still run.
``--quick`` is passed on to the scripts whose ``--help`` lists it. The last stdout line is the summary::

    {"benchmark": "run_all", "quick": false, "results": {"<name>": {...}}, "failed": {"<name>": "..."},
     "seconds": {"<name>": 12.3}}

    .venv/bin/python benchmarks/run_all.py [--only NAME ...] [--quick] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent


def scripts(folder: Path, only: list[str] | None) -> list[Path]:
    """The benchmark scripts of ``folder`` (sorted; not this one nor the ``_*.py`` helpers), or those named in
    ``only`` (unknown names are an error)."""
    found = {
        path.stem: path
        for path in sorted(folder.glob("*.py"))
        if not path.name.startswith("_") and path.resolve() != Path(__file__).resolve()
    }
    if not only:
        return list(found.values())
    unknown = sorted(set(only) - set(found))
    if unknown:
        raise SystemExit(f"run_all: unknown benchmark(s) {unknown}; available: {', '.join(found) or 'none'}")
    return [found[name] for name in only]


def supports_quick(script: Path) -> bool:
    """Whether the script's ``--help`` lists a ``--quick`` option."""
    try:
        result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                                cwd=REPO_ROOT, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and "--quick" in result.stdout


def last_json(lines: list[str]) -> dict:
    """The JSON object on the last non-empty line; ValueError when there is none."""
    for line in reversed(lines):
        if line.strip():
            value = json.loads(line)
            if not isinstance(value, dict):
                raise ValueError(f"the last line is JSON but not an object: {line.strip()[:200]}")
            return value
    raise ValueError("no output")


def _echo(stream, lines: list[str]) -> None:
    for line in stream:  # pass the output through as it comes
        print(line, end="", flush=True)
        lines.append(line)


def run_one(script: Path, quick: bool, timeout: float) -> dict:
    """Run one script, echoing its output; ``{"result": its JSON}`` or ``{"error": ...}``."""
    command = [sys.executable, str(script), *(["--quick"] if quick and supports_quick(script) else [])]
    print(f"== {script.stem}: {' '.join(command[1:])}", flush=True)
    lines: list[str] = []
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    except OSError as exc:
        return {"error": f"could not start: {exc}"}
    reader = threading.Thread(target=_echo, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return {"error": f"timed out after {timeout:g} s"}
    finally:
        reader.join(timeout=10)
    if code != 0:
        return {"error": f"exit status {code}"}
    try:
        return {"result": last_json(lines)}
    except ValueError as exc:
        return {"error": f"the last stdout line is not a JSON object ({exc})"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to the scripts that support it")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark (default 3600)")
    parser.add_argument("--dir", type=Path, default=HERE, help="folder of the benchmark scripts (default: this one)")
    args = parser.parse_args(argv)

    summary: dict = {"benchmark": "run_all", "quick": args.quick, "results": {}, "failed": {}, "seconds": {}}
    for script in scripts(args.dir, args.only):
        start = time.perf_counter()
        outcome = run_one(script, args.quick, args.timeout)
        summary["seconds"][script.stem] = round(time.perf_counter() - start, 1)
        if "error" in outcome:
            summary["failed"][script.stem] = outcome["error"]
            print(f"== {script.stem} failed: {outcome['error']}", file=sys.stderr, flush=True)
        else:
            summary["results"][script.stem] = outcome["result"]
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Resident memory of the API server over sequential ``POST /predict`` of the sample case: it must stay flat.

    python benchmarks/api_memory.py                       # 5 warm-up predictions, then 50 measured
    python benchmarks/api_memory.py --predictions 20 --warmup 3 --limit-mib 50
    python benchmarks/api_memory.py --mode client          # each round as the UI does it (see below)
    python benchmarks/api_memory.py --pause 11             # idle gaps between rounds
    python benchmarks/api_memory.py --mode threads --predictions 8 [--no-release]   # the drift's source, in-process

Starts ``brats serve`` (``python -m sspp_unet_api.app.main``) on 127.0.0.1 (CPU, the shipped checkpoint if
present, else a random model of the same architecture), uploads the bundled sample case, sends ``--warmup``
predictions, then ``--predictions`` more one after the other, reading the server's RSS (``VmRSS`` of
/proc/<pid>/status) after each. ``--mode json`` predicts the stored upload each time (``POST /predict`` with
JSON); ``--mode client`` makes each round a one-shot multipart ``POST /predict`` of the sample zip followed by
its overlay, its label map and the deletion of the upload, as a user of the UI does; ``--pause`` waits between
rounds. ``--mode threads`` needs no server: it runs the API's prediction function in this process, each time in
a new thread (as a server does when its pool of worker threads changes), which is where glibc's per-thread
arenas made the RSS drift (see ``sspp_unet_api/app/memory.py``); ``--no-release`` shows it without the fix. Growth is the RSS after the last prediction minus the RSS after the warm-up.
The last stdout line is one JSON object; the exit status is 1 when the growth exceeds ``--limit-mib``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from brats_core.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))
from api_support import SAMPLE_ZIP, benchmark_checkpoint, sample_files, serve, stop, upload_sample  # noqa: E402

MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=50, help="measured predictions after the warm-up")
    parser.add_argument("--warmup", type=int, default=5, help="predictions before the reference RSS")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of the server")
    parser.add_argument("--limit-mib", type=float, default=50.0, help="largest accepted growth (MiB)")
    parser.add_argument("--mode", choices=("json", "client", "threads"), default="json",
                        help="what one round is (see above)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between rounds (idle server)")
    parser.add_argument("--no-release", action="store_true",
                        help="serve with BRATS_RELEASE_MEMORY=0 (no arena cap, no malloc_trim), for comparison")
    parser.add_argument("--quick", action="store_true", help="10 predictions after 2 warm-up (benchmarks/run_all.py --quick passes it)")
    args = parser.parse_args(argv)
    if args.quick:
        args.predictions, args.warmup = min(args.predictions, 10), min(args.warmup, 2)

    with tempfile.TemporaryDirectory(prefix="brats_api_memory_") as tmp_name:
        tmp = Path(tmp_name)
        checkpoint, shipped = benchmark_checkpoint(tmp)
        if args.mode == "threads":
            os.environ["OMP_NUM_THREADS"] = str(args.threads)
            started, reference, series, wall, clean = in_new_threads(args, checkpoint, tmp)
        else:
            started, reference, series, wall, clean = through_the_server(args, checkpoint, tmp)
    return report(args, shipped, started, reference, series, wall, clean)


def in_new_threads(args: argparse.Namespace, checkpoint: Path, tmp: Path) -> tuple:
    """The API's prediction function on the sample case, each call in a new thread of this process."""
    import threading
    import zipfile

    from brats_app.registry import load_segmenter
    from brats_core.cases import find_cases
    from sspp_unet_api.app import memory
    from sspp_unet_api.app.inference import predict_case

    memory.configure_allocator(not args.no_release)
    zipfile.ZipFile(SAMPLE_ZIP).extractall(tmp / "case")
    files = find_cases(tmp / "case")[0]
    segmenter = load_segmenter("sspp", checkpoint=checkpoint, device="cpu")
    task = memory.trimmed(predict_case)

    def one_round(index: int) -> None:
        thread = threading.Thread(target=task, args=(segmenter, files, tmp / f"seg{index}.nii.gz"))
        thread.start()
        thread.join()

    started = rss_bytes(os.getpid())
    for index in range(args.warmup):
        one_round(index)
    reference, series, start = rss_bytes(os.getpid()), [], time.perf_counter()
    for index in range(args.predictions):
        one_round(args.warmup + index)
        series.append(rss_bytes(os.getpid()) / MIB)
        print(f"prediction {index + 1}: RSS {series[-1]:.1f} MiB", flush=True)
    return started, reference, series, time.perf_counter() - start, True


def through_the_server(args: argparse.Namespace, checkpoint: Path, tmp: Path) -> tuple:
    """Sequential requests to a real ``brats serve``; the server's RSS after each round."""
    env = {"BRATS_CHECKPOINT": str(checkpoint), "BRATS_DATA_DIR": str(tmp / "data"), "BRATS_DEVICE": "cpu",
           "BRATS_QUEUE_TIMEOUT_SECONDS": "600", "OMP_NUM_THREADS": str(args.threads),
           "BRATS_RELEASE_MEMORY": "0" if args.no_release else "1"}
    process, url = serve(env, tmp / "server.log", brats_serve=[])
    series: list[float] = []
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            sample = sample_files()
            upload_id = upload_sample(client)

            def one_round() -> None:
                if args.mode == "json":
                    client.post("/predict", json={"upload_id": upload_id}).raise_for_status()
                    return
                response = client.post("/predict", files=sample)
                response.raise_for_status()
                for link in response.json()["urls"].values():
                    client.get(link).raise_for_status()
                client.delete(f"/uploads/{response.json()['upload_id']}").raise_for_status()

            started = rss_bytes(process.pid)
            for _ in range(args.warmup):
                one_round()
            reference = rss_bytes(process.pid)
            start = time.perf_counter()
            for index in range(args.predictions):
                time.sleep(args.pause)
                one_round()
                series.append(rss_bytes(process.pid) / MIB)
                print(f"prediction {index + 1}: RSS {series[-1]:.1f} MiB", flush=True)
            wall = time.perf_counter() - start
    finally:
        clean = stop(process, tmp / "server.log")
    return started, reference, series, wall, clean


def report(args: argparse.Namespace, shipped: bool, started: int, reference: int, series: list[float], wall: float,
           clean: bool) -> int:
    growth = series[-1] - reference / MIB
    summary = {
        "benchmark": "api_memory",
        "weights": "shipped" if shipped else "random",
        "case": "sample_case.zip (240x240x155)",
        "mode": args.mode,
        "release_memory": not args.no_release,
        "server_threads": args.threads,
        "warmup": args.warmup,
        "predictions": args.predictions,
        "rss_after_start_mib": round(started / MIB, 1),
        "rss_after_warmup_mib": round(reference / MIB, 1),
        "rss_final_mib": round(series[-1], 1),
        "rss_max_mib": round(max(series), 1),
        "growth_mib": round(growth, 1),
        "limit_mib": args.limit_mib,
        "pause_s": args.pause,
        "seconds_per_round": round(wall / args.predictions - args.pause, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "clean_shutdown": clean,
    }
    print(f"RSS {summary['rss_after_warmup_mib']} MiB after {args.warmup} warm-up predictions, "
          f"{summary['rss_final_mib']} MiB after {args.predictions} more (max {summary['rss_max_mib']}): "
          f"growth {summary['growth_mib']} MiB (limit {args.limit_mib}; load average {summary['load_average_1min']})")
    print(json.dumps(summary))
    return 0 if growth <= args.limit_mib else 1


if __name__ == "__main__":
    sys.exit(main())

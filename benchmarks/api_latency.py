"""Latency and throughput of ``POST /predict`` through a real uvicorn server on loopback, on the sample case.

    python benchmarks/api_latency.py                                # 10 requests, 2 clients, 1 inference slot
    python benchmarks/api_latency.py --requests 20 --concurrency 4 --slots 2 --threads 1
    python benchmarks/api_latency.py --quick                        # 4 requests
    python benchmarks/api_latency.py --tta                          # every request with test-time flips
    python benchmarks/api_latency.py --model fusion                 # the fusion of U-Net and U-Net + SSPP

Starts ``uvicorn sspp_unet_api.app.main:app`` on 127.0.0.1 (CPU), uploads the bundled sample case
(240x240x155), sends one warm-up prediction and then ``--requests`` predictions from ``--concurrency`` clients,
and reports the p50/p95 client-side latency (queueing included), the server-side model time and the
predictions per minute. The model is the shipped ``Deep_Learning_Model/checkpoints/sspp.pt`` if present, else
a randomly initialised model of the default configuration (same architecture and cost; ``weights`` in the
JSON says which); ``--model`` serves another shipped model instead (its checkpoint must be there). The last
stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from brats_app.registry import default_checkpoint, models_of
from brats_core.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))
from api_support import benchmark_checkpoint, serve, stop, upload_sample  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10, help="timed /predict requests (after one warm-up)")
    parser.add_argument("--concurrency", type=int, default=2, help="clients sending at once")
    parser.add_argument("--slots", type=int, default=1, help="server inference slots (BRATS_MAX_CONCURRENT_INFERENCES)")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of the server")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for one request")
    parser.add_argument("--quick", action="store_true", help="4 requests (benchmarks/run_all.py --quick passes it)")
    parser.add_argument("--tta", action="store_true", help="every request (warm-up included) with test-time flips")
    parser.add_argument("--model", default="sspp", choices=models_of("Deep_Learning_Model"),
                        help="served model (default sspp; another must have its shipped checkpoint)")
    args = parser.parse_args(argv)
    if args.model != "sspp" and not default_checkpoint(args.model).is_file():
        parser.error(f"--model {args.model}: no shipped checkpoint at {default_checkpoint(args.model)}")
    if args.quick:
        args.requests = min(args.requests, 4)

    with tempfile.TemporaryDirectory(prefix="brats_api_bench_") as tmp_name:
        tmp = Path(tmp_name)
        checkpoint, shipped = benchmark_checkpoint(tmp) if args.model == "sspp" else (default_checkpoint(args.model), True)
        weights = "shipped" if shipped else "random (no shipped checkpoint; default configuration)"
        print(f"model: {checkpoint} ({weights})")
        env = {"BRATS_MODEL": args.model, "BRATS_CHECKPOINT": str(checkpoint), "BRATS_DATA_DIR": str(tmp / "data"), "BRATS_DEVICE": "cpu",
               "BRATS_MAX_CONCURRENT_INFERENCES": str(args.slots), "BRATS_QUEUE_TIMEOUT_SECONDS": str(args.timeout),
               "OMP_NUM_THREADS": str(args.threads)}
        process, url = serve(env, tmp / "server.log")
        try:
            with httpx.Client(base_url=url, timeout=args.timeout) as client:
                upload_id = upload_sample(client)
                request = {"upload_id": upload_id, "tta": args.tta}
                warm = client.post("/predict", json=request)
                warm.raise_for_status()
                print(f"warm-up: {warm.json()['total_seconds']:.2f} s server-side")

                def one(_: int) -> tuple[float, dict | None]:
                    start = time.perf_counter()
                    response = client.post("/predict", json=request)
                    return time.perf_counter() - start, response.json() if response.status_code == 200 else None

                start = time.perf_counter()
                with ThreadPoolExecutor(args.concurrency) as pool:
                    results = list(pool.map(one, range(args.requests)))
                wall = time.perf_counter() - start
        finally:
            clean = stop(process, tmp / "server.log")
    latencies = [seconds for seconds, body in results if body is not None]
    runtimes = [body["runtime_seconds"] for _, body in results if body is not None]
    summary = {
        "benchmark": "api_latency",
        "model": args.model,
        "weights": "shipped" if shipped else "random",
        "device": warm.json()["device"],
        "case": "sample_case.zip (240x240x155)",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "slots": args.slots,
        "tta": args.tta,
        "server_threads": args.threads,
        "errors": args.requests - len(latencies),
        "p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
        "p95_s": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        "model_p50_s": round(statistics.median(runtimes), 3) if runtimes else None,
        "requests_per_minute": round(len(latencies) / wall * 60.0, 2),
        "wall_s": round(wall, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "clean_shutdown": clean,
    }
    print(f"{len(latencies)}/{args.requests} ok, p50 {summary['p50_s']} s, p95 {summary['p95_s']} s, "
          f"model p50 {summary['model_p50_s']} s, {summary['requests_per_minute']} predictions/min "
          f"(load average {summary['load_average_1min']})")
    print(json.dumps(summary))
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

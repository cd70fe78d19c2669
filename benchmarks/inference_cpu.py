"""CPU inference time of one 240x240x155 case with U-Net + SSPP, ours against the original project's path.

    python benchmarks/inference_cpu.py                          # 2 cores, all 155 slices of the original path
    python benchmarks/inference_cpu.py --original-slices 12     # time 12 slices of the original, extrapolate

Ours, end to end: load the NIfTI files once -> preprocess -> batched bf16-autocast channels_last inference ->
restore to the original grid -> the post-processing the export records, if any -> save the NIfTI label map
(``ours_s_per_case`` is the median of ``--repeats`` runs after the first; the first, with one-off costs such as
oneDNN kernel creation, is ``ours_cold_s``).
The original path: for every axial slice, re-load the five volumes (four modalities and the seg) with nibabel
``get_fdata``, z-score and resize that slice, and run the same network in fp32 on a batch of one.

The case is the first test case of the saved split (``../shared/data/brats_dev``), else a synthetic
240x240x155 case; the model is the shipped ``Deep_Learning_Model/checkpoints/sspp.pt`` if present, else a
randomly initialised one of the same configuration (``weights`` in the JSON says which). The CPU is pinned
to ``--cores`` cores; the load average is reported because other processes on a shared machine slow both.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import malloc_tuning, pin_cores

BUDGET_S = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--case", type=Path, help="case folder (default: first test case, else synthetic)")
    parser.add_argument("--checkpoint", type=Path, help="sspp export (default: the shipped one, else random)")
    parser.add_argument("--batch-size", type=int, help="slices per forward pass (default: the predictor's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours after the first (cold) one")
    parser.add_argument("--original-slices", type=int, default=155,
                        help="slices of the original path to time (fewer than the case has: extrapolated)")
    args = parser.parse_args(argv)
    cores = pin_cores(args.cores)

    work = Path(tempfile.mkdtemp(prefix="inference_cpu_"))
    try:
        result = _run(args, cores, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


def _run(args: argparse.Namespace, cores: int, work: Path) -> dict:
    """Both measurements; the heavy imports happen here, after the cores are pinned."""
    import nibabel as nib
    import numpy as np
    import torch
    import torch.nn.functional as F

    from brats_app.registry import default_checkpoint
    from brats_core.cases import find_cases, load_case
    from brats_core.config import DEFAULT_SPLIT, SHARED_DATA_DIR
    from brats_core.device import autocast
    from brats_core.labels import classes_to_labels
    from brats_core.metrics import dice
    from brats_core.nifti import save_labels
    from brats_core.postprocess import apply_postprocess
    from brats_core.preprocessing import preprocess
    from brats_core.split import load_split
    from brats_core.synth import make_synthetic_case, write_case
    from Deep_Learning_Model.export import write_random_export
    from Deep_Learning_Model.heads import restore_labels
    from Deep_Learning_Model.model import ModelConfig, build_model
    from Deep_Learning_Model.predictor import (
        DEFAULT_BATCH_SIZE,
        Predictor,
        predict_volume,
        slice_probabilities,
    )

    torch.set_num_threads(cores)
    torch.set_num_interop_threads(1)

    if args.case is not None:
        files, source = find_cases(args.case)[0], str(args.case)
    elif SHARED_DATA_DIR.is_dir():
        test_ids = set(load_split(DEFAULT_SPLIT)["test"]) if DEFAULT_SPLIT.is_file() else set()
        found = find_cases(SHARED_DATA_DIR)
        files = next((f for f in found if f.case_id in test_ids), found[0])
        source = "shared (split test case)" if files.case_id in test_ids else "shared"
    else:
        synthetic = make_synthetic_case("synthetic_240", shape=(240, 240, 155), seed=0)
        files, source = write_case(synthetic, work / "cases"), "synthetic"

    checkpoint = args.checkpoint or default_checkpoint("sspp")
    weights = "given" if args.checkpoint else "shipped"
    if not checkpoint.is_file():
        checkpoint = write_random_export(work / "sspp_random.pt", ModelConfig("sspp"))
        weights = "random-init"

    start = time.perf_counter()
    predictor = Predictor.from_export(checkpoint, device="cpu", batch_size=args.batch_size or DEFAULT_BATCH_SIZE)
    model_load_s = time.perf_counter() - start

    # --- ours ---------------------------------------------------------------------------------------------
    runs, cpu, stages = [], [], []
    for _ in range(args.repeats + 1):
        times = {}
        wall, cpu_start = time.perf_counter(), time.process_time()
        t = time.perf_counter()
        case = load_case(files, with_seg=False)
        times["load_nifti"] = time.perf_counter() - t
        t = time.perf_counter()
        pre = preprocess(case, predictor.preprocess_config)
        times["preprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        config = predictor.model_config
        probs = slice_probabilities(
            predictor.model, pre.images, predictor.device, config.context, False, predictor.batch_size,
            head=config.head,
        )
        times["inference"] = time.perf_counter() - t
        t = time.perf_counter()
        labels = restore_labels(probs, pre.geometry, config.head, predictor.postprocess.thresholds)
        times["restore"] = time.perf_counter() - t
        t = time.perf_counter()
        labels = apply_postprocess(labels, pre.geometry.spacing, predictor.postprocess)  # none unless recorded
        times["postprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        save_labels(labels, case.affine, work / "ours" / f"{case.case_id}.nii.gz")
        times["save_nifti"] = time.perf_counter() - t
        runs.append(time.perf_counter() - wall)
        cpu.append(time.process_time() - cpu_start)
        stages.append(times)
    assert np.array_equal(labels, predictor.predict(case)), "benchmark stages differ from Predictor.predict"
    fp32 = predict_volume(predictor.model, pre.images, pre.geometry, "cpu", config.context,
                          batch_size=predictor.batch_size, amp=False, head=config.head,
                          thresholds=predictor.postprocess.thresholds)
    fp32 = apply_postprocess(fp32, pre.geometry.spacing, predictor.postprocess)
    warm = runs[1:] or runs
    median_run = runs.index(statistics.median_low(warm)) if len(warm) > 1 else len(runs) - 1
    ours = statistics.median(warm)

    # --- the original project's path ---------------------------------------------------------------------
    paths = [files.images[m] for m in ("t1", "t1ce", "t2", "flair")] + [files.seg or files.images["flair"]]
    depth = case.shape[2]
    measured = np.unique(np.linspace(0, depth - 1, min(args.original_slices, depth)).round().astype(int))
    model_fp32 = build_model(predictor.model_config).eval()
    model_fp32.load_state_dict(predictor.model.state_dict())
    size = predictor.model_config.input_size
    out = np.zeros(case.shape, dtype=np.uint8)
    start = time.perf_counter()
    with torch.no_grad():
        for z in measured:
            volumes = [nib.load(path).get_fdata() for path in paths]  # five volumes re-read for every slice
            planes = []
            for volume in volumes[:4]:
                plane = volume[:, :, z]
                plane = (plane - plane.mean()) / (plane.std() + 1e-8)
                planes.append(plane)
            x = torch.from_numpy(np.stack(planes)[None].astype(np.float32))
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            classes = model_fp32(x).argmax(dim=1, keepdim=True).float()
            back = F.interpolate(classes, size=case.shape[:2], mode="nearest")[0, 0].numpy()
            out[:, :, z] = classes_to_labels(back.astype(np.uint8))
    per_slice = (time.perf_counter() - start) / len(measured)
    start = time.perf_counter()
    save_labels(out, case.affine, work / "original" / f"{case.case_id}.nii.gz")
    original = per_slice * depth + (time.perf_counter() - start)

    result = {
        "benchmark": "inference_cpu",
        "ours_s_per_case": round(ours, 3),
        "original_s_per_case": round(original, 2),
        "speedup": round(original / ours, 1),
        "budget_s": BUDGET_S,
        "within_budget": ours <= BUDGET_S,
        "case": files.case_id,
        "case_source": source,
        "shape": list(case.shape),
        "slices_inferred": int(pre.images.shape[0]),
        "model": "sspp",
        "model_config": predictor.model_config.to_dict(),
        "weights": weights,
        "checkpoint": None if weights == "random-init" else str(checkpoint),
        "cores": cores,
        "batch_size": predictor.batch_size,
        "precision": "bf16 autocast" if isinstance(autocast(torch.device("cpu")), torch.autocast) else "fp32",
        "model_load_s": round(model_load_s, 3),
        "ours_cold_s": round(runs[0], 3),
        "ours_runs_s": [round(r, 3) for r in runs],
        "ours_cpu_s": round(statistics.median(cpu[1:] or cpu), 3),
        "ours_stages_s": {k: round(v, 3) for k, v in stages[median_run].items()},
        "bf16_vs_fp32_voxel_agreement": round(float(np.mean(labels == fp32)), 6),
        "bf16_vs_fp32_wt_dice": round(dice(labels > 0, fp32 > 0), 4),
        "original_s_per_slice": round(per_slice, 3),
        "original_slices_measured": int(len(measured)),
        "original_extrapolated": bool(len(measured) < depth),
        "original_precision": "fp32, batch 1",
        "original_model": "the same network and weights as ours",
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "malloc_tuning": malloc_tuning(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
    return result


if __name__ == "__main__":
    from brats_core.errors import BratsError

    try:
        sys.exit(main())
    except BratsError as exc:
        print(f"inference_cpu.py: error: {exc}", file=sys.stderr)
        sys.exit(1)

"""Synthetic BraTS-like cases: a skull-stripped brain with four modalities and a nested tumour.

Used by tests, CI and demos when the real data is absent. Deterministic for a seed, any shape and affine.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from brats_core.cases import Case, CaseFiles
from brats_core.config import MODALITIES

#: File suffix of each modality (and the seg) per naming convention.
NAMINGS: dict[str, dict[str, str]] = {
    "brats2020": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
    "brats2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
}

# Mean intensity per modality (t1, t1ce, t2, flair) of each tissue code, roughly skull-stripped scanner units.
_WM, _GM, _CSF, _EDEMA, _ENHANCING, _NECROSIS = range(6)
_TISSUE_MEANS = np.array(
    [
        (800.0, 850.0, 500.0, 450.0),  # white matter
        (600.0, 650.0, 750.0, 600.0),  # grey matter
        (250.0, 280.0, 1500.0, 150.0),  # CSF: dark on T1/FLAIR, bright on T2
        (550.0, 600.0, 1250.0, 1150.0),  # edema: bright on T2 and FLAIR
        (650.0, 1450.0, 900.0, 900.0),  # enhancing rim: bright on T1ce
        (300.0, 320.0, 1400.0, 550.0),  # necrotic core: dark on T1/T1ce
    ],
    dtype=np.float32,
)
_NOISE_SD = 25.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], cells: int = 5) -> np.ndarray:
    """A smooth random field in about [-1, 1]: a coarse Gaussian grid upsampled trilinearly."""
    grid = rng.standard_normal((1, 1, *(max(2, min(cells, s)) for s in shape))).astype(np.float32)
    field = F.interpolate(torch.from_numpy(grid), size=shape, mode="trilinear", align_corners=True)
    return field[0, 0].numpy() / 2.0


def _default_affine(shape: tuple[int, int, int], spacing: Sequence[float]) -> np.ndarray:
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -np.asarray(spacing, dtype=float) * (np.asarray(shape) - 1) / 2.0  # centred at the origin
    return affine


def make_synthetic_case(
    case_id: str = "synth_000",
    shape: tuple[int, int, int] = (96, 96, 64),
    affine: np.ndarray | None = None,
    seed: int = 0,
    spacing: Sequence[float] | None = None,
) -> Case:
    """Build a synthetic case in memory.

    ``affine`` defaults to a centred diagonal affine of voxel size ``spacing`` (1 mm when ``None``); the
    case's spacing is always derived from the affine's column norms, as NIfTI zooms would be. Images are
    integer-valued float32 (int16 range, background exactly 0); seg has labels 0/1/2/4 with necrosis (1)
    inside the enhancing rim (4) inside edema (2).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes >= 8, got {shape}")
    affine = (
        _default_affine(shape, spacing or (1.0, 1.0, 1.0)) if affine is None else np.asarray(affine, float)
    )
    case_spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    rng = np.random.default_rng(seed)

    # Normalised ellipsoid coordinates: the brain is |u| < 1 with an irregular, smooth boundary.
    axes = [
        np.linspace(-1.0, 1.0, s, dtype=np.float32) / r
        for s, r in zip(shape, (0.82, 0.86, 0.84), strict=True)
    ]
    ux, uy, uz = np.meshgrid(*axes, indexing="ij", sparse=True)
    radius = np.sqrt(ux**2 + uy**2 + uz**2)
    radius = radius * (1.0 + 0.08 * _smooth_noise(rng, shape, 4))
    brain = radius < 1.0

    texture = _smooth_noise(rng, shape, 7)
    ventricles = (((ux - 0.12) / 0.1) ** 2 + (uy / 0.3) ** 2 + (uz / 0.25) ** 2 < 1) | (
        ((ux + 0.12) / 0.1) ** 2 + (uy / 0.3) ** 2 + (uz / 0.25) ** 2 < 1
    )
    tissue = np.where((radius > 0.8 + 0.05 * texture) | (texture > 0.55), _GM, _WM).astype(np.uint8)
    tissue[ventricles | (radius > 0.97)] = _CSF

    # Tumour: distance to a random centre inside the brain, with an irregular boundary, thresholded 3 times.
    centre = rng.uniform(-0.4, 0.4, size=3)
    size = rng.uniform(0.3, 0.5)
    tumour_dist = np.sqrt((ux - centre[0]) ** 2 + (uy - centre[1]) ** 2 + (uz - centre[2]) ** 2)
    tumour_dist = tumour_dist * (1.0 + 0.25 * _smooth_noise(rng, shape, 5)) / size
    seg = np.zeros(shape, dtype=np.uint8)
    seg[tumour_dist < 1.0] = 2
    seg[tumour_dist < 0.7] = 4
    seg[tumour_dist < 0.5] = 1
    seg[~brain] = 0
    for label, code in ((2, _EDEMA), (4, _ENHANCING), (1, _NECROSIS)):
        tissue[seg == label] = code

    bias = np.exp(0.15 * _smooth_noise(rng, shape, 3))
    images = np.empty((len(MODALITIES), *shape), dtype=np.float32)
    for channel in range(len(MODALITIES)):
        means = _TISSUE_MEANS[tissue, channel] * (1.0 + 0.05 * texture)
        noisy = means * bias + rng.normal(0.0, _NOISE_SD, size=shape).astype(np.float32)
        images[channel] = np.where(brain, np.clip(np.rint(noisy), 1, 32767), 0)
    files = CaseFiles(case_id=case_id, images={}, seg=None)
    return Case(case_id=case_id, images=images, seg=seg, affine=affine, spacing=case_spacing, files=files)


def _image_array(data: np.ndarray) -> np.ndarray:
    """Store integer-valued images as int16 (like BraTS releases), anything else as float32."""
    if np.all(np.abs(data) <= 32767) and np.array_equal(np.rint(data), data):
        return data.astype(np.int16)
    return data.astype(np.float32)


def write_case(case: Case, folder: str | Path, naming: str = "brats2020", compress: bool = True) -> CaseFiles:
    """Write ``case`` as ``<folder>/<case_id>/<case_id><suffix>.nii[.gz]`` in a BraTS naming convention.

    ``naming="brats2020"`` writes ``_t1``, ``_t1ce``, ``_t2``, ``_flair``, ``_seg``; ``"brats2023"`` writes
    ``-t1n``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg`` with BraTS 2023's labels (enhancing tumour 3, not 4). The
    seg is written only when ``case.seg`` is not None.
    """
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {sorted(NAMINGS)}, got {naming!r}")
    suffixes = NAMINGS[naming]
    case_dir = Path(folder) / case.case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    extension = ".nii.gz" if compress else ".nii"

    def save(array: np.ndarray, key: str) -> Path:
        path = case_dir / f"{case.case_id}{suffixes[key]}{extension}"
        image = nib.Nifti1Image(array, case.affine)
        image.set_qform(case.affine, code=1)
        image.set_sform(case.affine, code=1)
        nib.save(image, path)
        return path

    images = {modality: save(_image_array(case.images[i]), modality) for i, modality in enumerate(MODALITIES)}
    seg = None
    if case.seg is not None:
        labels = np.asarray(case.seg, dtype=np.uint8)
        seg = save(np.where(labels == 4, 3, labels).astype(np.uint8) if naming == "brats2023" else labels, "seg")
    return CaseFiles(case_id=case.case_id, images=images, seg=seg)


def write_dataset(
    out_dir: str | Path,
    n: int = 5,
    seed: int = 0,
    shape: tuple[int, int, int] = (96, 96, 64),
    naming: str = "brats2020",
) -> list[CaseFiles]:
    """Write ``n`` synthetic cases ``synth_000``, ``synth_001``, ... under ``out_dir``; deterministic for ``seed``."""
    seeds = np.random.SeedSequence(seed).generate_state(n) if n > 0 else []
    return [
        write_case(make_synthetic_case(f"synth_{i:03d}", shape=shape, seed=int(s)), out_dir, naming=naming)
        for i, s in enumerate(seeds)
    ]


def main(argv: list[str] | None = None) -> int:
    """``brats synth --out DIR [--n 5] [--seed 0] [--shape X Y Z] [--naming brats2020|brats2023]``."""
    parser = argparse.ArgumentParser(prog="brats synth", description="Write synthetic BraTS-like cases.")
    parser.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per case)")
    parser.add_argument("--n", type=int, default=5, help="number of cases (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 96, 64), metavar=("X", "Y", "Z"))
    parser.add_argument(
        "--naming", choices=sorted(NAMINGS), default="brats2020", help="file naming convention"
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if min(args.shape) < 8:
        parser.error("--shape sizes must be at least 8")
    written = write_dataset(args.out, n=args.n, seed=args.seed, shape=tuple(args.shape), naming=args.naming)
    for files in written:
        print(f"wrote {files.case_id}: {files.images['t1'].parent}")
    print(f"{len(written)} synthetic cases in {args.out}")
    return 0

"""Reading and writing NIfTI files: one strict read per file (shape, size, gzip integrity), geometry and label
checks, and label maps written with their case's affine."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from brats_core.config import LABELS
from brats_core.errors import BratsError

#: Absolute tolerance when comparing the affines of a case's files.
AFFINE_ATOL = 1e-3
#: Largest image accepted (voxels), so that a forged header cannot make us allocate unbounded memory.
MAX_VOXELS = 256 * 1024 * 1024
_CHUNK = 1 << 20


def _diagnose(path: Path, exc: Exception) -> str:
    """Why a NIfTI file could not be read, in words (checks the gzip stream itself for ``.gz`` files)."""
    if isinstance(exc, OSError) and exc.errno is not None:  # the system refused (permissions, I/O), not the data
        return f"cannot be read ({exc.strerror})"
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as raw:
            if raw.read(2) != b"\x1f\x8b":
                return "not gzip-compressed although named .gz (not a .nii.gz file)"
        try:
            with gzip.open(path) as stream:
                while stream.read(_CHUNK):
                    pass
        except EOFError:
            return "file is truncated (the compressed data ends early)"
        except (zlib.error, gzip.BadGzipFile) as gzip_exc:
            return f"corrupt gzip data ({gzip_exc})"
    else:
        with open(path, "rb") as raw:
            if raw.read(2) == b"\x1f\x8b":
                return "gzip-compressed although named .nii: rename it .nii.gz"
    if isinstance(exc, (ImageFileError, HeaderDataError, WrapStructError)):
        return "not a valid NIfTI file (no readable NIfTI-1/NIfTI-2 header)"
    return f"not a valid NIfTI file or truncated ({type(exc).__name__}: {exc})"


def read_nifti(path: Path, name: str | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read one NIfTI file once: (3D data in its stored dtype, affine, voxel size in mm).

    Messages name the file ``name`` (default: ``path``), e.g. ``upload.zip/case/case_t1.nii.gz`` for a file
    extracted from a zip.

    ``nib.load`` parses the header only, so shape and size are checked before any data is decompressed.
    A ``.nii.gz`` is then decompressed in one pass to its end, so that the gzip CRC is verified (reading
    just the voxels, as nibabel does, would not notice corrupt data).
    """
    name = str(path) if name is None else name
    if not path.is_file():
        what = "a broken link" if path.is_symlink() else "a folder" if path.is_dir() else "missing"
        raise BratsError(f"{name}: cannot be read: the file is {what}")
    try:
        image = nib.load(path)
        shape = tuple(int(s) for s in image.shape)
        if len(shape) > 3 and all(s == 1 for s in shape[3:]):
            shape = shape[:3]
        if len(shape) != 3:
            raise BratsError(f"{name}: expected a 3D image, got shape {tuple(image.shape)}")
        if int(np.prod(shape)) > MAX_VOXELS:
            raise BratsError(f"{name}: image of shape {shape} is too large (more than {MAX_VOXELS} voxels)")
        if path.name.lower().endswith(".gz"):
            expected = (
                int(image.header.get_data_offset()) + int(np.prod(shape)) * image.get_data_dtype().itemsize
            )
            with gzip.open(path) as stream:
                raw = stream.read(expected + _CHUNK + 1)
            if len(raw) > expected + _CHUNK:
                raise BratsError(f"{name}: holds much more data than its header's shape {shape} declares")
            image = type(image).from_bytes(raw)
        data = np.asanyarray(image.dataobj).reshape(shape)
        affine = np.asarray(image.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    except BratsError:
        raise
    except Exception as exc:  # nibabel, gzip, zlib or numpy failing on this file: the file is bad
        raise BratsError(f"{name}: {_diagnose(path, exc)}") from exc
    return data, affine, zooms


def _label_values(data: np.ndarray) -> list:
    """The distinct values of a label map, fast for small non-negative integers (bincount, no sort)."""
    if np.issubdtype(data.dtype, np.integer) or np.array_equal(data, np.rint(data)):
        low, high = data.min(), data.max()
        if low >= 0 and high <= 255:
            return np.flatnonzero(np.bincount(data.astype(np.uint8).ravel(), minlength=256)).tolist()
    return np.unique(data).tolist()


def check_same_geometry(
    name: str, shape: tuple, affine: np.ndarray, ref_name: str, ref_shape: tuple, ref_affine: np.ndarray
) -> None:
    """Raise :class:`BratsError` naming both files unless the shapes are equal and the affines too.

    Affines may differ by ``AFFINE_ATOL`` per entry (rounding in the headers of a case's files).
    """
    if tuple(shape) != tuple(ref_shape):
        raise BratsError(f"{name}: shape {tuple(shape)} differs from {ref_name} shape {tuple(ref_shape)}")
    if not np.allclose(affine, ref_affine, rtol=0.0, atol=AFFINE_ATOL):
        raise BratsError(
            f"{name}: affine differs from {ref_name}:\n{np.array2string(affine, precision=4)}\n"
            f"vs\n{np.array2string(ref_affine, precision=4)}"
        )


def check_labels(seg: np.ndarray, name: str, brats2023: bool = False) -> np.ndarray:
    """``seg`` as uint8 BraTS labels 0/1/2/4, else :class:`BratsError` naming ``name``.

    ``brats2023``: the file belongs to a case with BraTS 2023+ names, whose segmentations mark enhancing
    tumour 3 (1 NETC, 2 SNFH, 3 ET): labels 0/1/2/3 are then read with 3 as 4. Elsewhere 0/1/2/3 is refused
    with the two conventions that use it (BraTS 2023+ and MSD Task01), which differ in what 1 and 2 mean.
    """
    values = _label_values(seg)
    if brats2023 and set(values) <= {0, 1, 2, 3}:
        labels = seg.astype(np.uint8)
        labels[labels == 3] = 4
        return labels
    bad = [v for v in values if v not in LABELS]
    if not bad:
        return seg.astype(np.uint8)
    if set(values) <= {0, 1, 2, 3}:
        raise BratsError(
            f"{name}: labels {values} are not BraTS 2018-2021 labels 0/1/2/4 (1 necrotic/non-enhancing core, "
            "2 edema, 4 enhancing tumour). If they are BraTS 2023+ labels (1 NETC, 2 SNFH, 3 ET), name the case's "
            "files -t1n/-t1c/-t2w/-t2f/-seg and they are read as such; if they are MSD Task01 labels (1 edema, "
            "2 non-enhancing tumour, 3 enhancing tumour), convert them to 0/1/2/4"
        )
    shown = ", ".join(f"{v:g}" for v in bad[:10])
    allowed = "{0, 1, 2, 4}, or {0, 1, 2, 3} for BraTS 2023+ names" if brats2023 else "{0, 1, 2, 4}"
    raise BratsError(f"{name}: segmentation has labels outside {allowed}: {shown}")


def save_labels(labels: np.ndarray, affine: np.ndarray, path: Path | str) -> Path:
    """Write a label map as a uint8 NIfTI with ``affine`` (qform and sform), creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), np.asarray(affine, dtype=np.float64))
    image.set_data_dtype(np.uint8)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
    return path

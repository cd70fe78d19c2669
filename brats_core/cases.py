"""Finding and loading BraTS cases from folders, nested folders and zip archives, with strict validation.

Accepted layouts: a case folder, a folder of case folders (at any depth), files of several cases lying flat
in one folder, or a ``.zip`` of any of these. File names follow BraTS 2018-2021 (``<case>_t1``, ``_t1ce``,
``_t2``, ``_flair``, ``_seg``) or BraTS 2023+ (``-t1n``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``), in any
letter case, as ``.nii`` or ``.nii.gz``. Every bad input raises :class:`BratsError` naming the file.
"""

from __future__ import annotations

import atexit
import gzip
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from brats_core.config import LABELS, MODALITIES
from brats_core.errors import BratsError

#: File-name suffix (lower case) -> modality key, or "seg".
SUFFIXES: dict[str, str] = {
    "t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg",
    "t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "t1gd": "t1ce",
}  # fmt: skip
#: How case files must be named, for error messages.
NAMING_HINT = "expected names ending in _t1/_t1ce/_t2/_flair[/_seg] or -t1n/-t1c/-t2w/-t2f[/-seg]"
_NAME_RE = re.compile(r"^(?:(?P<prefix>.*)[_-])?(?P<suffix>" + "|".join(SUFFIXES) + r")$", re.IGNORECASE)
#: Absolute tolerance when comparing the affines of a case's files.
AFFINE_ATOL = 1e-3
#: Largest image accepted (voxels), so that a forged header cannot make us allocate unbounded memory.
MAX_VOXELS = 256 * 1024 * 1024
_CHUNK = 1 << 20
# Extraction folder -> the zip it came from, so that messages name the archive, not a temp path.
_EXTRACTED: dict[Path, Path] = {}


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case: one image per modality (keys of ``MODALITIES``) and an optional seg."""

    case_id: str
    images: dict[str, Path]
    seg: Path | None = None


@dataclass
class Case:
    """A loaded case: ``images`` float32 (4, X, Y, Z) in ``MODALITIES`` order, ``seg`` uint8 (X, Y, Z) 0/1/2/4."""

    case_id: str
    images: np.ndarray
    seg: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    files: CaseFiles

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on what :func:`safe_extract_zip` will extract (defaults fit a handful of BraTS cases)."""

    max_members: int = 64
    max_total_uncompressed: int = 2 * 1024**3
    #: Largest uncompressed/compressed ratio of the whole archive (one empty label map alone compresses ~400:1,
    #: so the ratio is checked on the totals, once they exceed ``ratio_floor`` bytes).
    max_ratio: float = 200.0
    max_member_size: int = 1024**3
    ratio_floor: int = 16 * 1024**2


def _display(path: Path) -> str:
    """A path as the user knows it: files extracted from a zip are shown as ``archive.zip/member``."""
    for root, archive in _EXTRACTED.items():
        if path.is_relative_to(root):
            return str(archive / path.relative_to(root))
    return str(path)


# ----------------------------------------------------------------------------------------------- zip files
def _is_stray(name: str) -> bool:
    """macOS/OS clutter and hidden files, never extracted or read: ``__MACOSX/``, ``.DS_Store``, ``._*``."""
    parts = [p for p in name.split("/") if p]
    return not parts or "__MACOSX" in parts or parts[-1].startswith(".")


#: Longest name of one file or folder that common file systems hold (ext4, XFS, APFS, NTFS: 255 bytes), and
#: longest member path accepted (well below PATH_MAX, 4096 on Linux, once the target folder is prepended).
MAX_NAME_BYTES = 255
MAX_MEMBER_PATH_BYTES = 1024


def _shown(name: str, limit: int = 80) -> str:
    """A member name as messages show it: at most ``limit`` characters."""
    return name if len(name) <= limit else f"{name[:limit]}... ({len(name)} characters)"


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    longest = max((len(part.encode("utf-8", "surrogateescape")) for part in name.split("/")), default=0)
    if longest > MAX_NAME_BYTES:
        return f"has a file or folder name of {longest} bytes; file systems hold at most {MAX_NAME_BYTES}"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_MEMBER_PATH_BYTES:
        return f"is a path of more than {MAX_MEMBER_PATH_BYTES} bytes"
    if "\\" in name:
        return "contains a backslash (Windows path)"
    if name.startswith("/"):
        return "is an absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "starts with a drive letter"
    if ".." in name.split("/"):
        return "contains a '..' component (path traversal)"
    if "\x00" in name:
        return "contains a NUL character"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def safe_extract_zip(zip_path: str | Path, dest: str | Path, limits: ZipLimits = ZipLimits()) -> list[Path]:
    """Extract the regular files of ``zip_path`` under ``dest`` and return their paths.

    Rejects (with :class:`BratsError`) corrupt archives, unsafe member names (absolute, drive letter, ``..``,
    backslash), symlinks, encrypted members and archives beyond ``limits`` (member count, sizes and
    compression ratio, checked on the declared sizes and again on the bytes actually decompressed).
    Directories and clutter (``__MACOSX/``, ``.DS_Store``, ``._*``) are skipped. Nothing is written outside
    ``dest``; on error the files already extracted by this call are removed.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    label = f"archive '{zip_path.name}'"
    try:
        archive = zipfile.ZipFile(zip_path)
    except FileNotFoundError as exc:
        raise BratsError(f"{label}: file not found ({zip_path})") from exc
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise BratsError(f"{label} is not a valid zip archive ({exc})") from exc
    written: list[Path] = []
    try:
        with archive:
            members = _check_members(archive, label, limits)
            compressed = min(sum(i.compress_size for i in members), zip_path.stat().st_size)
            dest.mkdir(parents=True, exist_ok=True)
            root = dest.resolve()
            total = 0
            for info in members:
                target = (root / info.filename).resolve()
                if not target.is_relative_to(root) or target == root:
                    raise BratsError(
                        f"{label}: member '{info.filename}' would be written outside the target folder"
                    )
                if target.exists():
                    raise BratsError(f"{label}: member '{info.filename}' appears twice")
                target.parent.mkdir(parents=True, exist_ok=True)
                size = 0
                written.append(target)
                with archive.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        size += len(chunk)
                        total += len(chunk)
                        if size > min(info.file_size, limits.max_member_size):
                            raise BratsError(
                                f"{label}: member '{info.filename}' decompresses to more than its declared "
                                f"{info.file_size} bytes (possible zip bomb)"
                            )
                        if total > limits.max_total_uncompressed or (
                            total > limits.ratio_floor and total > limits.max_ratio * max(compressed, 1)
                        ):
                            raise BratsError(f"{label} decompresses to too much data (possible zip bomb)")
                        out.write(chunk)
    except BratsError:
        _remove(written)
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        _remove(written)
        raise BratsError(f"{label} is corrupt or unreadable ({exc})") from exc
    return written


def _check_members(archive: zipfile.ZipFile, label: str, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """Validate every member's name and type and the declared sizes; return the members to extract."""
    members = []
    for info in archive.infolist():
        reason = _unsafe_reason(info)
        if reason:
            raise BratsError(f"{label}: member '{_shown(info.filename)}' {reason}; refusing to extract")
        if not info.is_dir() and not _is_stray(info.filename):
            members.append(info)
    if len(members) > limits.max_members:
        raise BratsError(f"{label} has {len(members)} files; at most {limits.max_members} are accepted")
    for info in members:
        if info.file_size > limits.max_member_size:
            raise BratsError(
                f"{label}: member '{info.filename}' is {info.file_size / 2**20:.0f} MiB uncompressed; "
                f"at most {limits.max_member_size / 2**20:.0f} MiB is accepted"
            )
    total = sum(i.file_size for i in members)
    compressed = sum(i.compress_size for i in members)
    if total > limits.max_total_uncompressed:
        raise BratsError(
            f"{label} is {total / 2**20:.0f} MiB uncompressed; "
            f"at most {limits.max_total_uncompressed / 2**20:.0f} MiB is accepted"
        )
    if total > limits.ratio_floor and total > limits.max_ratio * max(compressed, 1):
        raise BratsError(
            f"{label} has a compression ratio of {total / max(compressed, 1):.0f}:1 "
            f"(limit {limits.max_ratio:.0f}:1); refusing a possible zip bomb"
        )
    return members


def _remove(paths: list[Path]) -> None:
    """Best-effort removal of partly extracted files (a failure here must not hide the original error)."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            continue


def _extract_to_temp(zip_path: Path, limits: ZipLimits) -> Path:
    """Extract into a temporary folder removed at process exit."""
    root = Path(tempfile.mkdtemp(prefix="brats_zip_")).resolve()
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    _EXTRACTED[root] = zip_path
    try:
        safe_extract_zip(zip_path, root, limits)
    except BratsError:
        shutil.rmtree(root, ignore_errors=True)
        del _EXTRACTED[root]
        raise
    return root


# ------------------------------------------------------------------------------------------- file names
def nifti_stem(name: str) -> str | None:
    """A file name without its ``.nii.gz``/``.nii`` extension (any letter case); None if it is not NIfTI."""
    lower = name.lower()
    for extension in (".nii.gz", ".nii"):
        if lower.endswith(extension):
            return name[: -len(extension)]
    return None


def parse_name(filename: str) -> tuple[str, str] | None:
    """(case prefix, modality key or ``"seg"``) of a BraTS file name; None if it is not one.

    ``BraTS20_Training_001_t1ce.nii.gz`` -> ``("BraTS20_Training_001", "t1ce")``,
    ``BraTS-GLI-00000-000-t2f.nii`` -> ``("BraTS-GLI-00000-000", "flair")``,
    ``FLAIR.nii.gz`` -> ``("", "flair")``.
    """
    stem = nifti_stem(filename)
    match = _NAME_RE.match(stem) if stem is not None else None
    if match is None:
        return None
    return match["prefix"] or "", SUFFIXES[match["suffix"].lower()]


def safe_name(name: str | None, max_length: int = 128) -> str:
    """The basename of a user-given file name, safe to write inside a folder of ours.

    Reduced to ``[A-Za-z0-9._-]``, no leading dot, at most ``max_length`` characters: ``../../x``,
    ``/abs/x``, ``C:\\dir\\x`` and ``dir\\x`` all become ``x``. Raises BratsError when nothing is left.
    """
    base = re.sub(r"^[A-Za-z]:", "", (name or "").replace("\\", "/").rsplit("/", 1)[-1])
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[-max_length:].lstrip(".")
    if not clean:
        raise BratsError(f"file name {name!r} has no usable characters; name files like <case>_t1.nii.gz")
    return clean


# ------------------------------------------------------------------------------------------- finding cases
def _nifti_files_by_folder(root: Path) -> dict[Path, list[Path]]:
    """Every visible ``.nii``/``.nii.gz`` file under ``root``, grouped by folder (hidden and clutter skipped).

    Symlinked folders are followed (data folders are often links), each real folder once.
    """
    found: dict[Path, list[Path]] = {}
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        files = [
            Path(folder) / n for n in sorted(names) if not n.startswith(".") and nifti_stem(n) is not None
        ]
        if files:
            found[Path(folder)] = files
    return found


def _group_folder(
    folder: Path, files: list[Path], zip_name: str | None
) -> tuple[list[CaseFiles], list[Path]]:
    """Cases in one folder: one case named after the folder, or several lying flat named by file prefix.

    ``zip_name`` is given for the root of an extracted zip, whose folder name is meaningless: a single case
    there is named by its file prefix (or the zip's name). Returns the cases and the unrecognised NIfTI files.
    """
    recognised: list[tuple[str, str, Path]] = []  # (key, prefix, path)
    seg_like: list[Path] = []
    unknown: list[Path] = []
    for path in files:
        parsed = parse_name(path.name)
        if parsed:
            recognised.append((parsed[1], parsed[0], path))
        elif "seg" in path.name.lower():
            seg_like.append(path)  # e.g. BraTS 2020 case 355: W39_1998.09.19_Segm.nii
        else:
            unknown.append(path)
    if not recognised and not seg_like:
        return [], unknown
    counts: dict[str, int] = defaultdict(int)
    for key, _, _ in recognised:
        counts[key] += 1
    prefixes = {prefix for _, prefix, _ in recognised}
    groups: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    if len(prefixes) > 1 and max(counts.values(), default=0) > 1:  # several cases lying flat
        if seg_like:
            raise BratsError(
                f"{_display(seg_like[0])}: looks like a segmentation but its name does not say which case "
                f"of folder {_display(folder)} it belongs to; rename it <case>_seg.nii.gz"
            )
        for key, prefix, path in recognised:
            groups[prefix or zip_name or folder.name].append((key, path))
    else:
        name = folder.name
        if zip_name is not None:
            name = (prefixes.pop() if len(prefixes) == 1 else "") or zip_name
        groups[name] = [(key, path) for key, _, path in recognised] + [("seg", p) for p in seg_like]
    return [_case_files(cid, entries, folder, unknown) for cid, entries in groups.items()], unknown


def _case_files(
    case_id: str, entries: list[tuple[str, Path]], folder: Path, unknown: list[Path]
) -> CaseFiles:
    by_key: dict[str, list[Path]] = defaultdict(list)
    for key, path in entries:
        by_key[key].append(path)
    for key, paths in by_key.items():
        if len(paths) > 1:
            what = "segmentation" if key == "seg" else f"modality '{key}'"
            listed = " and ".join(_display(p) for p in paths)
            raise BratsError(f"case '{case_id}': two files for {what}: {listed}")
    missing = [m for m in MODALITIES if m not in by_key]
    if missing:
        found = ", ".join(f"{k}={by_key[k][0].name}" for k in (*MODALITIES, "seg") if k in by_key) or "none"
        hint = f"; unrecognised NIfTI files: {', '.join(p.name for p in unknown)}" if unknown else ""
        raise BratsError(
            f"case '{case_id}' in {_display(folder)}: missing modality {', '.join(missing)} "
            f"(found {found}{hint}); {NAMING_HINT}"
        )
    seg = by_key.get("seg", [None])[0]
    return CaseFiles(case_id=case_id, images={m: by_key[m][0] for m in MODALITIES}, seg=seg)


def find_cases(path: str | Path, zip_limits: ZipLimits = ZipLimits()) -> list[CaseFiles]:
    """All cases under ``path`` (case folder, folder of cases at any depth, flat files, or ``.zip``), by id.

    The case id is the name of the folder holding the files; files of several cases lying flat in one
    folder (or at the root of a zip) are grouped by the file-name prefix, which becomes the case id.
    Missing or duplicate modalities raise :class:`BratsError`; geometry and labels are checked by
    :func:`load_case`. ``zip_limits`` bounds the extraction of a zip (raise them for a whole-dataset
    archive); extracted files live in a temporary folder removed at process exit.
    """
    path = Path(path)
    if not path.exists():
        raise BratsError(f"{path}: no such file or folder")
    zip_root: Path | None = None
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise BratsError(f"{path}: expected a case folder, a folder of cases or a .zip archive")
        zip_root = _extract_to_temp(path, zip_limits)
    root = zip_root or path
    cases: dict[str, CaseFiles] = {}
    unknown: list[Path] = []
    for folder, files in _nifti_files_by_folder(root).items():
        found, ignored = _group_folder(folder, files, path.stem if folder == zip_root else None)
        unknown += ignored
        for case in found:
            if case.case_id in cases:
                first, second = cases[case.case_id].images["t1"].parent, case.images["t1"].parent
                raise BratsError(
                    f"case id '{case.case_id}' appears twice: {_display(first)} and {_display(second)}"
                )
            cases[case.case_id] = case
    if not cases:
        if unknown:
            names = ", ".join(_display(p) for p in unknown[:5])
            raise BratsError(
                f"{path}: no BraTS case found; NIfTI files with unrecognised names: {names}; {NAMING_HINT}"
            )
        raise BratsError(f"{path}: no NIfTI files (.nii or .nii.gz) found")
    return [cases[k] for k in sorted(cases)]


# ------------------------------------------------------------------------------------------- loading cases
def _diagnose(path: Path, exc: Exception) -> str:
    """Why a NIfTI file could not be read, in words (checks the gzip stream itself for ``.gz`` files)."""
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
    if isinstance(exc, (ImageFileError, HeaderDataError, WrapStructError)):
        return "not a valid NIfTI file (no readable NIfTI-1/NIfTI-2 header)"
    return f"not a valid NIfTI file or truncated ({type(exc).__name__}: {exc})"


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read one NIfTI file once: (3D data in its stored dtype, affine, voxel size in mm).

    ``nib.load`` parses the header only, so shape and size are checked before any data is decompressed.
    A ``.nii.gz`` is then decompressed in one pass to its end, so that the gzip CRC is verified (reading
    just the voxels, as nibabel does, would not notice corrupt data).
    """
    name = _display(path)
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


def check_labels(seg: np.ndarray, name: str) -> np.ndarray:
    values = _label_values(seg)
    bad = [v for v in values if v not in LABELS]
    if not bad:
        return seg.astype(np.uint8)
    if set(values) <= {0, 1, 2, 3}:
        raise BratsError(
            f"{name}: labels {values} look like the MSD Task01 convention (0 background, 1 edema, "
            "2 non-enhancing tumour, 3 enhancing tumour); convert them to BraTS labels 0/1/2/4 "
            "(1 necrotic/non-enhancing core, 2 edema, 4 enhancing tumour)"
        )
    shown = ", ".join(f"{v:g}" for v in bad[:10])
    raise BratsError(f"{name}: segmentation has labels outside {{0, 1, 2, 4}}: {shown}")


def load_case(files_or_folder: CaseFiles | str | Path, with_seg: bool = True) -> Case:
    """Load one case (``CaseFiles``, or a folder/zip holding exactly one case); each file is read once.

    Checks that every file is 3D with the same shape and affine (tolerance ``AFFINE_ATOL``), that images
    are finite and that the seg holds only labels 0/1/2/4. ``with_seg=False`` does not read the seg.
    """
    files = files_or_folder
    if not isinstance(files, CaseFiles):
        found = find_cases(files_or_folder)
        if len(found) != 1:
            ids = ", ".join(c.case_id for c in found[:5])
            raise BratsError(f"{files_or_folder}: expected one case, found {len(found)} ({ids}, ...)")
        files = found[0]
    missing = [m for m in MODALITIES if m not in files.images]
    if missing:
        raise BratsError(f"case '{files.case_id}': no file given for modality {', '.join(missing)}")

    images: np.ndarray | None = None
    reference: tuple[str, tuple, np.ndarray] | None = None
    spacing = (1.0, 1.0, 1.0)

    for index, modality in enumerate(MODALITIES):
        path = Path(files.images[modality])
        name = _display(path)
        data, affine, zooms = read_nifti(path)
        if reference is None:
            reference = (name, data.shape, affine)
            spacing = zooms
            images = np.empty((len(MODALITIES), *data.shape), dtype=np.float32)
        else:
            check_same_geometry(name, data.shape, affine, *reference)
        images[index] = data
        if not np.issubdtype(data.dtype, np.integer) and not np.isfinite(images[index]).all():
            raise BratsError(f"{name}: image contains NaN or infinite values")

    seg = None
    if with_seg and files.seg is not None:
        name = _display(Path(files.seg))
        data, affine, _ = read_nifti(Path(files.seg))
        check_same_geometry(name, data.shape, affine, *reference)
        seg = check_labels(data, name)
    return Case(
        case_id=files.case_id, images=images, seg=seg, affine=reference[2], spacing=spacing, files=files
    )

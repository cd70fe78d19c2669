"""Finding and loading BraTS cases from folders, nested folders and zip archives, with strict validation.

Accepted layouts: a case folder, a folder of case folders (at any depth), files of several cases lying flat
in one folder, or a ``.zip`` of any of these. File names follow BraTS 2018-2021 (``<case>_t1``, ``_t1ce``,
``_t2``, ``_flair``, ``_seg``) or BraTS 2023+ (``-t1n``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``), in any
letter case, as ``.nii`` or ``.nii.gz``. Every bad input raises :class:`BratsError` naming the file.

Zip safety lives in :mod:`brats_core.archive`, file names in :mod:`brats_core.names`, reading and writing
NIfTI files in :mod:`brats_core.nifti`.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brats_core.archive import ZipLimits, safe_extract_zip
from brats_core.config import MODALITIES
from brats_core.errors import BratsError
from brats_core.names import NAMING_HINT, nifti_stem, parse_name, uses_brats2023_names
from brats_core.nifti import check_labels, check_same_geometry, read_nifti


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case: one image per modality (keys of ``MODALITIES``) and an optional seg."""

    case_id: str
    images: dict[str, Path]
    seg: Path | None = None
    #: How messages name these files: ``(folder, name)`` shows ``folder/a/b`` as ``name/a/b``, e.g. a zip's
    #: extraction folder as the zip; None shows paths as they are.
    shown_as: tuple[Path, str] | None = None

    def display(self, path: Path | str) -> str:
        """``path`` as the user knows it (see ``shown_as``)."""
        return show(Path(path), self.shown_as)

    @property
    def brats2023(self) -> bool:
        """Named the BraTS 2023+ way (``-t1n`` ...): its segmentation marks enhancing tumour 3, read as 4."""
        return uses_brats2023_names([*self.images.values(), *([self.seg] if self.seg else [])])


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


def show(path: Path, shown_as: tuple[Path, str] | None) -> str:
    """``path`` named for messages: below ``shown_as[0]`` it is shown below the name ``shown_as[1]``."""
    if shown_as is not None:
        root, name = shown_as
        if path == root:
            return name
        if path.is_relative_to(root):
            return f"{name}/{path.relative_to(root).as_posix()}"
    return str(path)


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
    folder: Path, files: list[Path], zip_name: str | None, shown_as: tuple[Path, str] | None
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
                f"{show(seg_like[0], shown_as)}: looks like a segmentation but its name does not say which "
                f"case of folder {show(folder, shown_as)} it belongs to; rename it <case>_seg.nii.gz"
            )
        for key, prefix, path in recognised:
            groups[prefix or zip_name or folder.name].append((key, path))
    else:
        named: dict[str, list[str]] = defaultdict(list)  # the cases the files name (a bare "t1.nii.gz" names none)
        spelled: dict[str, str] = {}  # each case as its first file spells it
        for key, prefix, _ in recognised:
            if prefix:
                named[prefix.casefold()].append(key)
                spelled.setdefault(prefix.casefold(), prefix)
        if len(named) > 1:
            order = [*MODALITIES, "seg"]
            listed = "; ".join(f"{spelled[prefix]} ({', '.join(sorted(keys, key=order.index))})"
                               for prefix, keys in sorted(named.items()))
            raise BratsError(
                f"{show(folder, shown_as)}: the files of one case name {len(named)} different cases: {listed}; "
                "the files of a case share their prefix (<case>_t1.nii.gz, <case>_t1ce.nii.gz, ...): were files of "
                "two patients mixed?"
            )
        name = folder.name
        if zip_name is not None:
            name = (prefixes.pop() if len(prefixes) == 1 else "") or zip_name
        groups[name] = [(key, path) for key, _, path in recognised] + [("seg", p) for p in seg_like]
    return [_case_files(cid, entries, folder, unknown, shown_as) for cid, entries in groups.items()], unknown


def _case_files(
    case_id: str, entries: list[tuple[str, Path]], folder: Path, unknown: list[Path],
    shown_as: tuple[Path, str] | None,
) -> CaseFiles:
    by_key: dict[str, list[Path]] = defaultdict(list)
    for key, path in entries:
        by_key[key].append(path)
    for key, paths in by_key.items():
        if len(paths) > 1:
            what = "segmentation" if key == "seg" else f"modality '{key}'"
            listed = " and ".join(show(p, shown_as) for p in paths)
            raise BratsError(f"case '{case_id}': two files for {what}: {listed}")
    missing = [m for m in MODALITIES if m not in by_key]
    if missing:
        found = ", ".join(f"{k}={by_key[k][0].name}" for k in (*MODALITIES, "seg") if k in by_key) or "none"
        hint = f"; unrecognised NIfTI files: {', '.join(p.name for p in unknown)}" if unknown else ""
        raise BratsError(
            f"case '{case_id}' in {show(folder, shown_as)}: missing modality {', '.join(missing)} "
            f"(found {found}{hint}); {NAMING_HINT}"
        )
    seg = by_key.get("seg", [None])[0]
    return CaseFiles(case_id=case_id, images={m: by_key[m][0] for m in MODALITIES}, seg=seg, shown_as=shown_as)


def find_cases(path: str | Path, shown_as: str | None = None, root_name: str | None = None) -> list[CaseFiles]:
    """All cases under the folder ``path`` (a case folder, folders of cases at any depth, flat files), by id.

    The case id is the name of the folder holding the files; files of several cases lying flat in one
    folder are grouped by the file-name prefix, which becomes the case id. Missing or duplicate modalities
    raise :class:`BratsError`; geometry and labels are checked by :func:`load_case`. ``shown_as`` names
    ``path`` in messages (e.g. the zip it was extracted from); ``root_name`` names a single case lying in
    ``path`` itself when the folder's own name is meaningless (an extraction folder). A ``.zip`` is refused
    here: :func:`open_cases` opens one.
    """
    path = Path(path)
    label = shown_as or str(path)
    if not path.exists():
        raise BratsError(f"{label}: no such file or folder")
    if path.is_file():
        hint = "; open it with brats_core.cases.open_cases" if path.suffix.lower() == ".zip" else ""
        raise BratsError(f"{label}: expected a case folder, a folder of cases or a .zip archive{hint}")
    root = path.resolve() if shown_as is not None else path
    where = (root, shown_as) if shown_as is not None else None
    cases: dict[str, CaseFiles] = {}
    unknown: list[Path] = []
    for folder, files in _nifti_files_by_folder(root).items():
        found, ignored = _group_folder(folder, files, root_name if folder == root else None, where)
        unknown += ignored
        for case in found:
            if case.case_id in cases:
                first, second = cases[case.case_id].images["t1"].parent, case.images["t1"].parent
                raise BratsError(
                    f"case id '{case.case_id}' appears twice: {show(first, where)} and {show(second, where)}"
                )
            cases[case.case_id] = case
    if not cases:
        if unknown:
            names = ", ".join(show(p, where) for p in unknown[:5])
            raise BratsError(
                f"{label}: no BraTS case found; NIfTI files with unrecognised names: {names}; {NAMING_HINT}"
            )
        raise BratsError(f"{label}: no NIfTI files (.nii or .nii.gz) found")
    return [cases[k] for k in sorted(cases)]


@contextmanager
def open_cases(path: str | Path, zip_limits: ZipLimits = ZipLimits()) -> Iterator[list[CaseFiles]]:
    """:func:`find_cases` for a folder or a ``.zip``, as a context: a zip is extracted (within ``zip_limits``;
    raise them for a whole-dataset archive) into a temporary folder removed on exit, and its files are named
    ``<zip>/<member>`` in messages. Load the cases inside the ``with`` block."""
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() == ".zip"):
        yield find_cases(path)
        return
    with tempfile.TemporaryDirectory(prefix="brats_zip_") as folder:
        safe_extract_zip(path, folder, zip_limits)
        yield find_cases(folder, shown_as=str(path), root_name=path.stem)


def load_case(files_or_folder: CaseFiles | str | Path, with_seg: bool = True) -> Case:
    """Load one case (``CaseFiles``, or a folder/zip holding exactly one case); each file is read once.

    Checks that every file is 3D with the same shape and affine (tolerance ``AFFINE_ATOL``), that images
    are finite and that the seg holds only labels 0/1/2/4 (or 0/1/2/3 for BraTS 2023+ names, read with 3 as 4).
    ``with_seg=False`` does not read the seg.
    """
    if not isinstance(files_or_folder, CaseFiles):
        with open_cases(files_or_folder) as found:
            if len(found) != 1:
                ids = ", ".join(c.case_id for c in found[:5])
                raise BratsError(f"{files_or_folder}: expected one case, found {len(found)} ({ids}, ...)")
            return load_case(found[0], with_seg)
    files = files_or_folder
    missing = [m for m in MODALITIES if m not in files.images]
    if missing:
        raise BratsError(f"case '{files.case_id}': no file given for modality {', '.join(missing)}")

    images: np.ndarray | None = None
    reference: tuple[str, tuple, np.ndarray] | None = None
    spacing = (1.0, 1.0, 1.0)

    for index, modality in enumerate(MODALITIES):
        path = Path(files.images[modality])
        name = files.display(path)
        data, affine, zooms = read_nifti(path, name)
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
        name = files.display(files.seg)
        data, affine, _ = read_nifti(Path(files.seg), name)
        check_same_geometry(name, data.shape, affine, *reference)
        seg = check_labels(data, name, files.brats2023)
    return Case(
        case_id=files.case_id, images=images, seg=seg, affine=reference[2], spacing=spacing, files=files
    )

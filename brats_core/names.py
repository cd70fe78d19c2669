"""BraTS file names: which case and modality a file holds, and user file names made safe to write."""

from __future__ import annotations

import re

from brats_core.errors import BratsError

#: File-name suffix (lower case) -> modality key, or "seg".
SUFFIXES: dict[str, str] = {
    "t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg",
    "t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "t1gd": "t1ce",
}  # fmt: skip
#: Suffixes only BraTS 2023+ uses. Its segmentations mark enhancing tumour 3 (1 NETC, 2 SNFH, 3 ET) where
#: BraTS 2018-2021 use 4: a case named this way has its label 3 read as 4 (:func:`brats_core.nifti.check_labels`).
BRATS2023_SUFFIXES = frozenset({"t1n", "t1c", "t2w", "t2f"})
#: How case files must be named, for error messages.
NAMING_HINT = "expected names ending in _t1/_t1ce/_t2/_flair[/_seg] or -t1n/-t1c/-t2w/-t2f[/-seg]"
_NAME_RE = re.compile(r"^(?:(?P<prefix>.*)[_-])?(?P<suffix>" + "|".join(SUFFIXES) + r")$", re.IGNORECASE)


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


def uses_brats2023_names(paths: object) -> bool:
    """True when any of ``paths`` (file names or paths) carries a BraTS 2023+ modality suffix (``-t1n`` ...)."""
    for path in paths:
        stem = nifti_stem(str(path).replace("\\", "/").rsplit("/", 1)[-1])
        match = _NAME_RE.match(stem) if stem is not None else None
        if match is not None and match["suffix"].lower() in BRATS2023_SUFFIXES:
            return True
    return False


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

"""The on-disk slice cache: each case preprocessed once into ``.npy`` memory maps, reused until it changes.

Layout: ``<cache_root>/<key>/<case_id>/`` where ``key`` is a short hash of the :class:`PreprocessConfig` and
:data:`FORMAT_VERSION`, so each preprocessing configuration has its own folder (``<key>/config.json`` says
which). Each case folder holds:

- ``images.npy``: float16 (Z', 4, S, S), the preprocessed axial slices (modalities in ``MODALITIES`` order);
- ``labels.npy``: uint8 (Z', S, S), labels 0/1/2/4 (only for cases with a seg);
- ``brain.npy``: bool (Z', S, S), the brain mask;
- ``native_labels.npy``: uint8, the seg cropped to ``meta["native_box"]`` at native resolution (the brain's
  bounding box, grown if needed to hold every labelled voxel), so validation can score in the original voxel
  space without re-reading NIfTI (see :meth:`CacheEntry.original_labels`);
- ``meta.json``: case id, source files (path, size, mtime_ns), preprocessing config, geometry, tumour and brain
  slice indices, slice count and format version.

A case is rebuilt when the identity (path, size, mtime_ns) of any of its source files changes. Each case is
written into a temporary folder and renamed into place, so an interrupted build never leaves a partial case
(temporary folders of killed builds on this host are removed by the next build).
:func:`open_cache` opens an existing cache without the source NIfTI (e.g. on a GPU machine given only the cache).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm import tqdm

from brats_core.cases import CaseFiles, load_case, open_cases
from brats_core.config import MODALITIES, PreprocessConfig, cache_dir
from brats_core.errors import BratsError
from brats_core.files import atomic_path
from brats_core.preprocessing import Geometry, bounding_box, preprocess

#: Version of the on-disk layout and of what it holds; bump it when either (or ``preprocess``'s output) changes.
FORMAT_VERSION = 1
_META = "meta.json"
_TMP_PREFIX = ".tmp-"


def _tmp_prefix() -> str:
    """Prefix of this process's temporary names: ``.tmp-<pid>@<host>-`` (see :func:`_remove_orphans`)."""
    return f"{_TMP_PREFIX}{os.getpid()}@{socket.gethostname()}-"


def cache_key(config: PreprocessConfig) -> str:
    """Short hash of the preprocessing config and the format version: the name of the cache's folder."""
    payload = json.dumps({"format_version": FORMAT_VERSION, "preprocess": config.to_dict()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cache_path(config: PreprocessConfig = PreprocessConfig(), cache_root: Path | str | None = None) -> Path:
    """The folder holding the cached cases of ``config`` (``<cache_root>/<key>``; root defaults to ``cache_dir()``)."""
    return Path(cache_dir() if cache_root is None else cache_root) / cache_key(config)


@dataclass(eq=False)
class CacheEntry:
    """One cached case, read through memory maps. Pickles as its path (workers re-open the maps)."""

    case_id: str
    path: Path
    #: float16 (Z', 4, S, S) memory map.
    images: np.ndarray = field(repr=False)
    #: uint8 (Z', S, S) memory map of labels 0/1/2/4, or None for a case without seg.
    labels: np.ndarray | None = field(repr=False)
    #: bool (Z', S, S) memory map of the brain mask.
    brain: np.ndarray = field(repr=False)
    geometry: Geometry
    #: Indices of the slices with any label > 0 (empty without seg).
    tumour_slices: np.ndarray = field(repr=False)
    #: Indices of the slices with any brain pixel.
    brain_slices: np.ndarray = field(repr=False)
    spacing: tuple[float, float, float]
    affine: np.ndarray = field(repr=False)
    config: PreprocessConfig
    #: ``(x0, x1, y0, y1, z0, z1)`` of ``native_labels`` in the original grid (None without seg).
    native_box: tuple[int, int, int, int, int, int] | None

    @property
    def num_slices(self) -> int:
        return int(self.images.shape[0])

    @cached_property
    def native_labels(self) -> np.ndarray | None:
        """uint8 memory map of the seg inside ``native_box`` at native resolution (None without seg)."""
        path = self.path / "native_labels.npy"
        return np.load(path, mmap_mode="r") if path.exists() else None

    def original_labels(self) -> np.ndarray | None:
        """The seg in the case's original grid: uint8 ``geometry.shape`` (None without seg)."""
        if self.native_labels is None:
            return None
        out = np.zeros(self.geometry.shape, dtype=np.uint8)
        x0, x1, y0, y1, z0, z1 = self.native_box
        out[x0:x1, y0:y1, z0:z1] = self.native_labels
        return out

    def __reduce__(self):
        return _open_entry, (self.path,)


# ------------------------------------------------------------------------------------------------ reading
def _open_entry(case_dir: Path) -> CacheEntry:
    """Open one cached case folder (raises BratsError when it is missing, stale or inconsistent)."""
    case_dir = Path(case_dir)
    meta_path = case_dir / _META
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as exc:
        raise BratsError(f"{case_dir}: not a cached case (no {_META})") from exc
    except (OSError, ValueError) as exc:
        raise BratsError(f"{meta_path}: unreadable cache metadata ({exc})") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise BratsError(
            f"{meta_path}: cache format {meta.get('format_version')} but this code reads format {FORMAT_VERSION}; "
            "rebuild the cache with `brats cache DATA_DIR`"
        )
    try:
        images = np.load(case_dir / "images.npy", mmap_mode="r")
        brain = np.load(case_dir / "brain.npy", mmap_mode="r")
        labels = np.load(case_dir / "labels.npy", mmap_mode="r") if meta["has_labels"] else None
        geometry = Geometry.from_dict(meta["geometry"])
    except (OSError, ValueError, KeyError) as exc:
        raise BratsError(
            f"{case_dir}: corrupt cached case ({type(exc).__name__}: {exc}); delete it and rebuild"
        ) from exc
    size, depth = geometry.size, geometry.crop_shape[2]
    expected = {"images": (depth, len(MODALITIES), size, size), "brain": (depth, size, size)}
    if labels is not None:
        expected["labels"] = (depth, size, size)
    found = {"images": images, "brain": brain, "labels": labels}
    for name, shape in expected.items():
        if found[name].shape != shape:
            raise BratsError(
                f"{case_dir}/{name}.npy: shape {found[name].shape}, expected {shape}; rebuild the cache"
            )
    native_box = meta.get("native_box")
    return CacheEntry(
        case_id=meta["case_id"],
        path=case_dir,
        images=images,
        labels=labels,
        brain=brain,
        geometry=geometry,
        tumour_slices=np.asarray(meta["tumour_slices"], dtype=np.int64),
        brain_slices=np.asarray(meta["brain_slices"], dtype=np.int64),
        spacing=geometry.spacing,
        affine=np.asarray(geometry.affine, dtype=np.float64),
        config=PreprocessConfig.from_dict(meta["preprocess"]),
        native_box=None if native_box is None else tuple(int(v) for v in native_box),
    )


def open_cache(cache_dir_for_key: Path | str, case_ids: Iterable[str] | None = None) -> list[CacheEntry]:
    """Open cached cases from ``<cache_root>/<key>`` (see :func:`cache_path`) without their source NIfTI.

    ``case_ids`` selects cases (in that order; a missing one raises BratsError); None opens every case, by id.
    """
    key_dir = Path(cache_dir_for_key).resolve()
    if not key_dir.is_dir():
        raise BratsError(f"{key_dir}: no slice cache here; build one with `brats cache DATA_DIR`")
    if case_ids is None:
        ids = sorted(
            p.name for p in key_dir.iterdir() if not p.name.startswith(".") and (p / _META).is_file()
        )
        if not ids:
            raise BratsError(
                f"{key_dir}: the slice cache holds no case; build it with `brats cache DATA_DIR`"
            )
    else:
        ids = list(case_ids)
        missing = [i for i in ids if not (key_dir / i / _META).is_file()]
        if missing:
            raise BratsError(f"{key_dir}: cases not in the slice cache: {', '.join(missing)}")
    return [_open_entry(key_dir / i) for i in ids]


# ------------------------------------------------------------------------------------------------ writing
def _sources(files: CaseFiles) -> dict[str, dict | None]:
    """Identity of each source file: resolved path, size and mtime_ns (seg: None when absent)."""
    paths = {**{m: files.images[m] for m in MODALITIES}, "seg": files.seg}
    out: dict[str, dict | None] = {}
    for key, path in paths.items():
        if path is None:
            out[key] = None
            continue
        try:
            stat = Path(path).stat()
        except OSError as exc:
            raise BratsError(f"{path}: cannot read source file of case '{files.case_id}' ({exc})") from exc
        out[key] = {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return out


def _is_current(case_dir: Path, sources: dict) -> bool:
    try:
        meta = json.loads((case_dir / _META).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format_version") == FORMAT_VERSION and meta.get("sources") == sources


def _check_case_id(files: CaseFiles) -> None:
    case_id = files.case_id
    if not case_id or case_id.startswith(".") or any(c in case_id for c in "/\\\x00"):
        raise BratsError(
            f"case id {case_id!r} ({files.images.get('t1')}) cannot name a cache folder (empty, hidden or a path)"
        )


def _native_box(seg: np.ndarray, bbox: Sequence[int]) -> tuple[int, ...]:
    """The brain bbox grown to hold every labelled voxel of ``seg``."""
    labelled = bounding_box(seg)
    if labelled is None:
        return tuple(bbox)
    return tuple(min(a, b) if i % 2 == 0 else max(a, b) for i, (a, b) in enumerate(zip(bbox, labelled, strict=True)))


def _build_case(files: CaseFiles, config: PreprocessConfig, key_dir: Path, sources: dict) -> Path:
    """Preprocess one case and move it into ``key_dir/<case_id>`` atomically; returns that folder."""
    case = load_case(files)
    pre = preprocess(case, config)
    images = pre.images.astype(np.float16)
    if not np.isfinite(images).all():
        raise BratsError(
            f"case '{files.case_id}' ({files.images['t1']}): preprocessed intensities overflow float16"
        )
    depth = images.shape[0]
    meta = {
        "format_version": FORMAT_VERSION,
        "case_id": files.case_id,
        "sources": sources,
        "preprocess": config.to_dict(),
        "geometry": pre.geometry.to_dict(),
        "num_slices": depth,
        "has_labels": pre.labels is not None,
        "tumour_slices": [] if pre.labels is None else np.flatnonzero(pre.labels.any(axis=(1, 2))).tolist(),
        "brain_slices": np.flatnonzero(pre.brain.any(axis=(1, 2))).tolist(),
        "native_box": None,
    }
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(), dir=key_dir))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        np.save(tmp / "images.npy", images)
        np.save(tmp / "brain.npy", np.ascontiguousarray(pre.brain, dtype=bool))
        if pre.labels is not None:
            np.save(tmp / "labels.npy", np.ascontiguousarray(pre.labels, dtype=np.uint8))
            box = _native_box(case.seg, pre.geometry.bbox)
            x0, x1, y0, y1, z0, z1 = box
            np.save(
                tmp / "native_labels.npy", np.ascontiguousarray(case.seg[x0:x1, y0:y1, z0:z1], dtype=np.uint8)
            )
            meta["native_box"] = list(box)
        (tmp / _META).write_text(json.dumps(meta, indent=1))  # last: a folder with meta.json is complete
        target = key_dir / files.case_id
        if target.exists():  # move the stale case aside: a folder cannot be renamed onto a non-empty one
            stale = Path(tempfile.mkdtemp(prefix=_tmp_prefix(), dir=key_dir))
            os.replace(target, stale / "old")
            os.replace(tmp, target)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _remove_orphans(key_dir: Path) -> None:
    """Remove temporary files left by killed builds: those of this host whose process is gone."""
    host = socket.gethostname()
    for path in key_dir.glob(f"{_TMP_PREFIX}*"):
        pid, _, owner = path.name[len(_TMP_PREFIX) :].rpartition("-")[0].partition("@")
        if owner == host and pid.isdigit() and not _process_alive(int(pid)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _prepare_key_dir(config: PreprocessConfig, cache_root: Path | str | None) -> Path:
    key_dir = cache_path(config, cache_root).resolve()
    key_dir.mkdir(parents=True, exist_ok=True)
    config_file = key_dir / "config.json"
    if not config_file.exists():
        with atomic_path(config_file) as tmp:
            tmp.write_text(
                json.dumps({"format_version": FORMAT_VERSION, "preprocess": config.to_dict()}, indent=1)
            )
    _remove_orphans(key_dir)
    return key_dir


def build_cache(
    cases: list[CaseFiles],
    config: PreprocessConfig = PreprocessConfig(),
    cache_root: Path | str | None = None,
    progress: bool = True,
    workers: int = 1,
) -> list[CacheEntry]:
    """Preprocess the cases not cached yet (or whose sources changed) and return all entries, in input order.

    ``workers > 1`` preprocesses cases in that many processes. ``progress`` shows a tqdm bar (stderr).
    """
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise BratsError(f"case ids appear more than once: {', '.join(duplicates)}")
    for files in cases:
        _check_case_id(files)
    key_dir = _prepare_key_dir(config, cache_root)
    todo = []
    for files in cases:
        sources = _sources(files)
        if not _is_current(key_dir / files.case_id, sources):
            todo.append((files, sources))
    bar = tqdm(total=len(todo), desc=f"caching {key_dir.name}", unit="case", disable=not progress or not todo)
    with bar:
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), initializer=_init_worker) as pool:
                futures = [pool.submit(_build_case, files, config, key_dir, src) for files, src in todo]
                try:
                    for future in as_completed(futures):
                        future.result()
                        bar.update()
                except BaseException:
                    pool.shutdown(cancel_futures=True)  # do not start the cases still queued
                    raise
        else:
            for files, sources in todo:
                bar.set_postfix_str(files.case_id)
                _build_case(files, config, key_dir, sources)
                bar.update()
    return open_cache(key_dir, ids)


# ------------------------------------------------------------------------------------------------ CLI
def _disk_size(paths: Iterable[Path]) -> int:
    return sum(f.stat().st_size for path in paths for f in path.iterdir() if f.is_file())


def main(argv: list[str] | None = None) -> int:
    """``brats cache DATA_DIR [--cache-dir DIR] [--size 128] [--workers N]``."""
    parser = argparse.ArgumentParser(
        prog="brats cache",
        description="Preprocess cases into the on-disk slice cache (reused until they change).",
    )
    parser.add_argument("data_dir", type=Path, help="case folder, folder of cases or .zip")
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"cache root (default {cache_dir()})")
    parser.add_argument("--size", type=int, default=PreprocessConfig().size,
                        help="in-plane slice size (default %(default)s; 0 keeps the native crop size)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    args = parser.parse_args(argv)
    if args.size < 0:
        parser.error("--size must be positive (or 0 for the native crop size)")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    config = PreprocessConfig(size=args.size or None)
    start = time.perf_counter()
    with open_cases(args.data_dir) as cases:
        entries = build_cache(cases, config, cache_root=args.cache_dir, workers=args.workers)
    elapsed = time.perf_counter() - start
    slices = sum(e.num_slices for e in entries)
    tumour = sum(len(e.tumour_slices) for e in entries)
    size_mib = _disk_size(e.path for e in entries) / 2**20
    print(f"cache directory: {cache_path(config, args.cache_dir).resolve()}")
    print(f"cases: {len(entries)}  slices: {slices} ({tumour} with tumour)  size on disk: {size_mib:.1f} MiB")
    print(f"time: {elapsed:.1f} s")
    return 0

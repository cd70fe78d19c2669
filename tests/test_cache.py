"""The on-disk slice cache: layout, reuse, invalidation, atomic writes, opening without sources, CLI."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import brats_core.cache as cache_module
from brats_app.cli import main as brats_main
from brats_core.cache import FORMAT_VERSION, build_cache, cache_key, cache_path, open_cache
from brats_core.cases import CaseFiles, find_cases, load_case
from brats_core.config import LABELS, PreprocessConfig
from brats_core.errors import BratsError
from brats_core.preprocessing import preprocess
from brats_core.synth import make_synthetic_case, write_case

SMALL = PreprocessConfig(size=32)


@pytest.fixture
def data(tmp_path: Path, synthetic_root: Path) -> Path:
    """A private, writable copy of the synthetic cases."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "data"))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Case ids passed to ``load_case`` by the cache, in order (``preprocess`` is counted too)."""
    seen: list[str] = []

    def counting_load(files: CaseFiles, *args, **kwargs):
        seen.append(files.case_id)
        return load_case(files, *args, **kwargs)

    def counting_preprocess(case, config):
        seen.append(f"preprocess:{case.case_id}")
        return preprocess(case, config)

    monkeypatch.setattr(cache_module, "load_case", counting_load)
    monkeypatch.setattr(cache_module, "preprocess", counting_preprocess)
    return seen


def _snapshot(entries) -> dict[str, np.ndarray]:
    return {e.case_id: np.array(e.images) for e in entries}


# ------------------------------------------------------------------------------------------ reuse and keys
def test_builds_once_then_reuses(data: Path, tmp_path: Path, calls: list[str]) -> None:
    cases = find_cases(data)
    first = build_cache(cases, SMALL, cache_root=tmp_path / "cache", progress=False)
    assert [c for c in calls if not c.startswith("preprocess:")] == [c.case_id for c in cases]
    assert len([c for c in calls if c.startswith("preprocess:")]) == len(cases)
    calls.clear()
    second = build_cache(cases, SMALL, cache_root=tmp_path / "cache", progress=False)
    assert calls == []
    assert [e.case_id for e in second] == [e.case_id for e in first]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_changed_source_rebuilds_that_case_only(data: Path, tmp_path: Path, calls: list[str]) -> None:
    cases = find_cases(data)
    build_cache(cases, SMALL, cache_root=tmp_path / "cache", progress=False)
    calls.clear()
    # mtime only: case 0 is rebuilt.
    t1 = cases[0].images["t1"]
    stat = t1.stat()
    os.utime(t1, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    build_cache(cases, SMALL, cache_root=tmp_path / "cache", progress=False)
    assert calls == [cases[0].case_id, f"preprocess:{cases[0].case_id}"]
    calls.clear()
    # New content (size changes): case 1's seg loses its enhancing tumour; the cache follows.
    seg_image = nib.load(cases[1].seg)
    seg = np.asarray(seg_image.dataobj).copy()
    seg[seg == 4] = 1
    nib.save(nib.Nifti1Image(seg, seg_image.affine), cases[1].seg)
    entries = build_cache(cases, SMALL, cache_root=tmp_path / "cache", progress=False)
    assert calls == [cases[1].case_id, f"preprocess:{cases[1].case_id}"]
    assert 4 not in np.unique(entries[1].labels) and 4 in np.unique(entries[2].labels)
    np.testing.assert_array_equal(entries[1].original_labels(), seg)


def test_config_change_uses_another_key_dir(synthetic_root: Path, tmp_path: Path) -> None:
    cases = find_cases(synthetic_root)[:1]
    small = build_cache(cases, SMALL, cache_root=tmp_path, progress=False)
    default = build_cache(cases, PreprocessConfig(), cache_root=tmp_path, progress=False)
    other_clip = PreprocessConfig(size=32, clip_percentiles=(1.0, 99.0))
    assert len({cache_key(SMALL), cache_key(PreprocessConfig()), cache_key(other_clip)}) == 3
    assert small[0].path.parent == cache_path(SMALL, tmp_path).resolve()
    assert default[0].path.parent == cache_path(PreprocessConfig(), tmp_path).resolve()
    assert small[0].images.shape[-2:] == (32, 32) and default[0].images.shape[-2:] == (128, 128)
    saved = json.loads((small[0].path.parent / "config.json").read_text())
    assert PreprocessConfig.from_dict(saved["preprocess"]) == SMALL and small[0].config == SMALL


def test_default_root_is_config_cache_dir(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BRATS_CACHE_DIR", str(tmp_path / "env_cache"))
    [entry] = build_cache(find_cases(synthetic_root)[:1], SMALL, progress=False)
    assert entry.path.is_relative_to((tmp_path / "env_cache").resolve())


def test_parallel_build_matches_serial(synthetic_root: Path, tmp_path: Path) -> None:
    cases = find_cases(synthetic_root)[:2]
    serial = build_cache(cases, SMALL, cache_root=tmp_path / "serial", progress=False)
    parallel = build_cache(cases, SMALL, cache_root=tmp_path / "parallel", progress=False, workers=2)
    for a, b in zip(serial, parallel, strict=True):
        assert a.case_id == b.case_id
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)


# ------------------------------------------------------------------------------------------ layout
def test_layout_dtypes_and_contents(synthetic_root: Path, tmp_path: Path) -> None:
    files = find_cases(synthetic_root)[0]
    [entry] = build_cache([files], SMALL, cache_root=tmp_path, progress=False)
    case = load_case(files)
    expected = preprocess(case, SMALL)
    depth = expected.images.shape[0]
    assert isinstance(entry.images, np.memmap) and isinstance(entry.labels, np.memmap)
    assert entry.images.dtype == np.float16 and entry.images.shape == (depth, 4, 32, 32)
    assert entry.labels.dtype == np.uint8 and entry.labels.shape == (depth, 32, 32)
    assert entry.brain.dtype == bool and entry.brain.shape == (depth, 32, 32)
    assert set(np.unique(entry.labels).tolist()) <= set(LABELS)
    np.testing.assert_allclose(entry.images, expected.images, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(entry.labels, expected.labels)
    np.testing.assert_array_equal(entry.brain, expected.brain)
    assert entry.geometry == expected.geometry and entry.num_slices == depth
    np.testing.assert_allclose(entry.affine, case.affine)
    assert entry.spacing == tuple(case.spacing)
    # Native labels: the seg inside the brain box, and the full seg rebuilt exactly.
    x0, x1, y0, y1, z0, z1 = entry.native_box
    assert entry.native_labels.dtype == np.uint8
    np.testing.assert_array_equal(entry.native_labels, case.seg[x0:x1, y0:y1, z0:z1])
    np.testing.assert_array_equal(entry.original_labels(), case.seg)
    meta = json.loads((entry.path / "meta.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["num_slices"] == depth
    assert meta["sources"]["t1"]["size"] == files.images["t1"].stat().st_size
    assert meta["sources"]["seg"]["mtime_ns"] == files.seg.stat().st_mtime_ns


def test_tumour_slices(synthetic_root: Path, tmp_path: Path) -> None:
    entries = build_cache(find_cases(synthetic_root), SMALL, cache_root=tmp_path, progress=False)
    for entry in entries:
        expected = np.flatnonzero(np.asarray(entry.labels).any(axis=(1, 2)))
        assert expected.size > 0
        np.testing.assert_array_equal(entry.tumour_slices, expected)
        assert entry.num_slices > expected.size  # the synthetic brain extends beyond the tumour


def test_native_box_holds_labels_outside_the_brain(tmp_path: Path) -> None:
    case = make_synthetic_case("stray", shape=(32, 32, 16), seed=1)
    case.seg[0, 0, 0] = 2  # a labelled voxel outside the brain's bounding box
    files = write_case(case, tmp_path / "data")
    [entry] = build_cache([files], SMALL, cache_root=tmp_path / "cache", progress=False)
    assert entry.native_box[0] == 0 and entry.native_box[4] == 0
    np.testing.assert_array_equal(entry.original_labels(), case.seg)


def test_case_without_seg(tmp_path: Path) -> None:
    case = make_synthetic_case("no_seg", shape=(32, 32, 16), seed=2)
    case.seg = None
    files = write_case(case, tmp_path / "data")
    [entry] = build_cache([files], SMALL, cache_root=tmp_path / "cache", progress=False)
    assert entry.labels is None and entry.native_labels is None and entry.original_labels() is None
    assert entry.tumour_slices.size == 0 and not (entry.path / "labels.npy").exists()


# ------------------------------------------------------------------------------------------ open_cache
def test_open_cache_without_sources(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = find_cases(data)
    built = build_cache(cases, SMALL, cache_root=tmp_path / "cache", progress=False)
    expected = _snapshot(built)
    shutil.rmtree(data)

    def no_nifti(*args, **kwargs):
        raise AssertionError("open_cache read a NIfTI file")

    monkeypatch.setattr(nib, "load", no_nifti)
    key_dir = cache_path(SMALL, tmp_path / "cache")
    opened = open_cache(key_dir)
    assert [e.case_id for e in opened] == sorted(expected)
    for entry in opened:
        np.testing.assert_array_equal(entry.images, expected[entry.case_id])
    subset = open_cache(key_dir, [cases[2].case_id, cases[0].case_id])
    assert [e.case_id for e in subset] == [cases[2].case_id, cases[0].case_id]
    assert subset[1].geometry == built[0].geometry
    np.testing.assert_array_equal(subset[1].tumour_slices, built[0].tumour_slices)


def test_entry_pickles_as_its_path(synthetic_root: Path, tmp_path: Path) -> None:
    [entry] = build_cache(find_cases(synthetic_root)[:1], SMALL, cache_root=tmp_path, progress=False)
    payload = pickle.dumps(entry)
    assert len(payload) < 2000  # the arrays are not copied
    clone = pickle.loads(payload)
    assert isinstance(clone.images, np.memmap)
    np.testing.assert_array_equal(clone.images, entry.images)


def test_open_cache_bad_inputs(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(BratsError, match="no slice cache"):
        open_cache(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BratsError, match="holds no case"):
        open_cache(tmp_path / "empty")
    [entry] = build_cache(
        find_cases(synthetic_root)[:1], SMALL, cache_root=tmp_path / "cache", progress=False
    )
    key_dir = entry.path.parent
    with pytest.raises(BratsError, match="not in the slice cache: nope"):
        open_cache(key_dir, [entry.case_id, "nope"])


def test_open_cache_stale_format(synthetic_root: Path, tmp_path: Path) -> None:
    [entry] = build_cache(find_cases(synthetic_root)[:1], SMALL, cache_root=tmp_path, progress=False)
    meta_path = entry.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(BratsError, match=f"meta.json: cache format {FORMAT_VERSION + 1}"):
        open_cache(entry.path.parent)


def test_open_cache_corrupt_case(synthetic_root: Path, tmp_path: Path) -> None:
    [entry] = build_cache(find_cases(synthetic_root)[:1], SMALL, cache_root=tmp_path, progress=False)
    (entry.path / "images.npy").write_bytes(b"not numpy")
    with pytest.raises(BratsError, match="corrupt cached case"):
        open_cache(entry.path.parent)
    (entry.path / "meta.json").write_text("{truncated")
    with pytest.raises(BratsError, match="unreadable cache metadata"):
        open_cache(entry.path.parent)


def test_open_cache_wrong_shape(synthetic_root: Path, tmp_path: Path) -> None:
    [entry] = build_cache(find_cases(synthetic_root)[:1], SMALL, cache_root=tmp_path, progress=False)
    np.save(entry.path / "labels.npy", np.zeros((2, 32, 32), dtype=np.uint8))
    with pytest.raises(BratsError, match=r"labels.npy: shape \(2, 32, 32\)"):
        open_cache(entry.path.parent)


# ------------------------------------------------------------------------------------------ atomic writes
class _Interrupt(KeyboardInterrupt):
    """Stands for Ctrl-C or a kill arriving in the middle of writing a case."""


def _interrupt_second_save(monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = np.save
    count = {"n": 0}

    def flaky_save(*args, **kwargs):
        count["n"] += 1
        if count["n"] == 2:
            raise _Interrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", flaky_save)


def test_interrupted_build_leaves_no_partial_case(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    cases = find_cases(synthetic_root)[:2]
    key_dir = cache_path(SMALL, tmp_path).resolve()
    build_cache(cases[:1], SMALL, cache_root=tmp_path, progress=False)
    with monkeypatch.context() as patch:
        _interrupt_second_save(patch)
        with pytest.raises(_Interrupt):
            build_cache(cases, SMALL, cache_root=tmp_path, progress=False)
    assert sorted(p.name for p in key_dir.iterdir()) == ["config.json", cases[0].case_id]
    entries = build_cache(cases, SMALL, cache_root=tmp_path, progress=False)
    assert [e.case_id for e in entries] == [c.case_id for c in cases]


def test_interrupted_rebuild_keeps_the_old_case(data: Path, tmp_path: Path, monkeypatch, calls) -> None:
    cases = find_cases(data)[:1]
    [old] = build_cache(cases, SMALL, cache_root=tmp_path / "cache", progress=False)
    expected = np.array(old.images)
    os.utime(cases[0].images["flair"], ns=(0, 10**18))
    with monkeypatch.context() as patch:
        _interrupt_second_save(patch)
        with pytest.raises(_Interrupt):
            build_cache(cases, SMALL, cache_root=tmp_path / "cache", progress=False)
    [kept] = open_cache(old.path.parent)  # the previous, complete version is still there
    np.testing.assert_array_equal(kept.images, expected)
    assert not list(old.path.parent.glob(".tmp-*"))
    calls.clear()
    build_cache(cases, SMALL, cache_root=tmp_path / "cache", progress=False)  # and is rebuilt next time
    assert calls == [cases[0].case_id, f"preprocess:{cases[0].case_id}"]


def test_leftovers_of_a_killed_build_are_removed(synthetic_root: Path, tmp_path: Path) -> None:
    key_dir = cache_path(SMALL, tmp_path)
    host = socket.gethostname()
    dead = key_dir / f".tmp-999999999@{host}-abc"
    alive = key_dir / f".tmp-{os.getpid()}@{host}-abc"  # another live build may still own it
    elsewhere = key_dir / ".tmp-999999999@another-host-abc"  # a build on a machine sharing the folder
    for folder in (dead, alive, elsewhere):
        folder.mkdir(parents=True)
        (folder / "images.npy").write_bytes(b"partial")
    (key_dir / f".tmp-999999999@{host}-config.json").write_text("{")
    build_cache(find_cases(synthetic_root)[:1], SMALL, cache_root=tmp_path, progress=False)
    assert sorted(p.name for p in key_dir.glob(".tmp-*")) == sorted([alive.name, elsewhere.name])


# ------------------------------------------------------------------------------------------ bad inputs
def test_duplicate_case_ids(synthetic_root: Path, tmp_path: Path) -> None:
    files = find_cases(synthetic_root)[0]
    with pytest.raises(BratsError, match=f"more than once: {files.case_id}"):
        build_cache([files, files], SMALL, cache_root=tmp_path, progress=False)


@pytest.mark.parametrize("case_id", ["", ".hidden", "a/b"])
def test_case_id_that_cannot_name_a_folder(synthetic_root: Path, tmp_path: Path, case_id: str) -> None:
    files = find_cases(synthetic_root)[0]
    with pytest.raises(BratsError, match="cannot name a cache folder"):
        build_cache([CaseFiles(case_id, files.images, files.seg)], SMALL, cache_root=tmp_path, progress=False)


def test_missing_source_file(data: Path, tmp_path: Path) -> None:
    files = find_cases(data)[0]
    files.images["t2"].unlink()
    with pytest.raises(BratsError, match=f"{files.images['t2']}: cannot read source file"):
        build_cache([files], SMALL, cache_root=tmp_path / "cache", progress=False)


# ------------------------------------------------------------------------------------------ CLI
def test_cli(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert brats_main(["cache", str(synthetic_root), "--cache-dir", str(tmp_path), "--size", "32"]) == 0
    out = capsys.readouterr().out
    key_dir = cache_path(SMALL, tmp_path).resolve()
    assert f"cache directory: {key_dir}" in out
    assert "cases: 4 " in out and "size on disk:" in out and "time:" in out
    assert len(open_cache(key_dir)) == 4


def test_cli_bad_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert brats_main(["cache", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path)]) == 1
    assert "nowhere: no such file or folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.real_data
def test_real_case(real_or_synthetic_root: Path, tmp_path: Path) -> None:
    files = find_cases(real_or_synthetic_root)[0]
    [entry] = build_cache([files], PreprocessConfig(), cache_root=tmp_path, progress=False)
    seg = np.asarray(nib.load(files.seg).dataobj)
    np.testing.assert_array_equal(entry.original_labels(), seg)
    assert entry.images.shape[1:] == (4, 128, 128) and np.isfinite(entry.images).all()
    assert entry.tumour_slices.size > 0 and entry.num_slices <= seg.shape[2]

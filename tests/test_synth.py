"""Synthetic cases: determinism, plausible contrasts, nested labels, any geometry, files and CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from brats_app import cli
from brats_core.cases import find_cases, load_case
from brats_core.config import MODALITIES
from brats_core.synth import make_synthetic_case, write_case, write_dataset

SHAPE = (32, 32, 16)


def test_deterministic_for_a_seed() -> None:
    a, b = make_synthetic_case(shape=SHAPE, seed=7), make_synthetic_case(shape=SHAPE, seed=7)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.seg, b.seg)
    assert not np.array_equal(a.images, make_synthetic_case(shape=SHAPE, seed=8).images)


def test_layout_values_and_labels() -> None:
    case = make_synthetic_case("s", shape=SHAPE, seed=1)
    assert case.case_id == "s" and case.shape == SHAPE and case.images.shape == (4, *SHAPE)
    assert case.images.dtype == np.float32 and case.seg.dtype == np.uint8
    assert (
        np.array_equal(case.images, np.rint(case.images))
        and 0 <= case.images.min() <= case.images.max() < 2**15
    )
    assert set(np.unique(case.seg)) == {0, 1, 2, 4}
    brain = case.images[0] > 0
    assert all(((case.images[m] > 0) == brain).all() for m in range(4))  # background exactly 0 everywhere
    assert not case.seg[~brain].any()


def test_tumour_is_nested() -> None:
    case = make_synthetic_case(shape=(64, 64, 40), seed=2)
    healthy = (case.seg == 0) & (case.images[0] > 0)
    # necrosis (1) is wrapped in the enhancing rim (4), the whole core in edema (2)
    assert not (
        ndimage.binary_dilation(case.seg == 1) & np.isin(case.seg, (0, 2)) & (case.images[0] > 0)
    ).any()
    assert not (ndimage.binary_dilation(np.isin(case.seg, (1, 4))) & healthy).any()


def test_contrasts_are_plausible() -> None:
    case = make_synthetic_case(shape=(64, 64, 40), seed=3)
    t1, t1ce, t2, flair = (case.images[MODALITIES.index(m)] for m in MODALITIES)
    healthy = (case.seg == 0) & (t1 > 0)

    def mean(image: np.ndarray, mask: np.ndarray) -> float:
        return float(image[mask].mean())

    edema, enhancing, necrosis = case.seg == 2, case.seg == 4, case.seg == 1
    assert mean(flair, edema) > 1.5 * mean(flair, healthy) and mean(t2, edema) > 1.3 * mean(t2, healthy)
    assert mean(t1ce, enhancing) > 1.5 * mean(t1ce, healthy)
    assert mean(t1, necrosis) < 0.7 * mean(t1, healthy) and mean(t1ce, necrosis) < 0.7 * mean(t1ce, healthy)


def test_any_shape_and_affine() -> None:
    affine = np.array([[0, -1.2, 0, 50], [0.8, 0, 0, -20], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    case = make_synthetic_case(shape=(21, 37, 9), affine=affine, seed=4)
    assert case.shape == (21, 37, 9) and case.spacing == pytest.approx((0.8, 1.2, 3.0))
    np.testing.assert_array_equal(case.affine, affine)
    assert make_synthetic_case(shape=SHAPE, spacing=(2.0, 2.0, 4.0)).spacing == (2.0, 2.0, 4.0)
    with pytest.raises(ValueError, match="at least|>= 8"):
        make_synthetic_case(shape=(4, 32, 32))


@pytest.mark.parametrize(
    ("naming", "names"),
    [
        ("brats2020", ["c_flair.nii.gz", "c_seg.nii.gz", "c_t1.nii.gz", "c_t1ce.nii.gz", "c_t2.nii.gz"]),
        ("brats2023", ["c-seg.nii.gz", "c-t1c.nii.gz", "c-t1n.nii.gz", "c-t2f.nii.gz", "c-t2w.nii.gz"]),
    ],
)
def test_write_case_round_trip(tmp_path: Path, naming: str, names: list[str]) -> None:
    case = make_synthetic_case("c", shape=SHAPE, seed=5, spacing=(1.0, 1.5, 2.0))
    files = write_case(case, tmp_path, naming=naming)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == names
    loaded = load_case(files)
    np.testing.assert_array_equal(loaded.images, case.images)
    np.testing.assert_array_equal(loaded.seg, case.seg)
    np.testing.assert_allclose(loaded.affine, case.affine)
    assert loaded.spacing == pytest.approx(case.spacing)


def test_write_uncompressed_without_seg(tmp_path: Path) -> None:
    case = make_synthetic_case("u", shape=SHAPE)
    case.seg = None
    files = write_case(case, tmp_path, compress=False)
    assert files.seg is None and files.images["t1"].name == "u_t1.nii"
    assert load_case(files).seg is None


def test_write_dataset(tmp_path: Path) -> None:
    written = write_dataset(tmp_path / "a", n=3, seed=1, shape=SHAPE)
    assert [f.case_id for f in written] == ["synth_000", "synth_001", "synth_002"]
    assert [f.case_id for f in find_cases(tmp_path / "a")] == ["synth_000", "synth_001", "synth_002"]
    again = write_dataset(tmp_path / "b", n=1, seed=1, shape=SHAPE)[0]
    assert again.images["t1"].read_bytes() == written[0].images["t1"].read_bytes()
    first, second = (load_case(f) for f in written[:2])
    assert not np.array_equal(first.seg, second.seg)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", "--out", str(tmp_path), "--n", "2", "--seed", "3", "--shape", "24", "24", "12"]
    assert cli.main([*argv, "--naming", "brats2023"]) == 0
    assert "2 synthetic cases" in capsys.readouterr().out
    found = find_cases(tmp_path)
    assert [c.case_id for c in found] == ["synth_000", "synth_001"]
    assert found[0].images["flair"].name == "synth_000-t2f.nii.gz"
    assert load_case(found[1]).shape == (24, 24, 12)
    with pytest.raises(SystemExit):
        cli.main(["synth", "--out", str(tmp_path), "--shape", "4", "4", "4"])

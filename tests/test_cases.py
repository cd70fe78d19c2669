"""Finding, loading and validating cases; safe zip extraction. Tiny synthetic volumes (32x32x16)."""

from __future__ import annotations

import gzip
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_core.cases import Case, CaseFiles, find_cases, load_case, open_cases
from brats_core.config import LABELS, MODALITIES, SHARED_DATA_DIR
from brats_core.errors import BratsError
from brats_core.names import parse_name
from brats_core.synth import make_synthetic_case, write_case

SHAPE = (32, 32, 16)


@pytest.fixture(scope="module")
def tiny() -> Case:
    return make_synthetic_case("case_a", shape=SHAPE, seed=3)


@pytest.fixture
def case_dir(tmp_path: Path, tiny: Case) -> Path:
    """``tmp_path/data/case_a`` holding one case in BraTS 2020 naming."""
    write_case(tiny, tmp_path / "data")
    return tmp_path / "data" / "case_a"


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def _zip(zip_path: Path, folder: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            archive.write(file, file.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return zip_path


def _assert_same(case: Case, reference: Case) -> None:
    assert case.images.dtype == np.float32 and case.images.shape == (4, *SHAPE)
    np.testing.assert_array_equal(case.images, reference.images)
    np.testing.assert_array_equal(case.seg, reference.seg)
    np.testing.assert_allclose(case.affine, reference.affine)


# ------------------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize(
    ("filename", "parsed"),
    [
        ("BraTS20_Training_001_t1ce.nii.gz", ("BraTS20_Training_001", "t1ce")),
        ("BraTS-GLI-00000-000-t2f.nii", ("BraTS-GLI-00000-000", "flair")),
        ("case_T1GD.NII.GZ", ("case", "t1ce")),
        ("seg.nii.gz", ("", "seg")),
        ("case_t1.txt", None),
        ("case_dwi.nii.gz", None),
        ("case_t1ce_mask.nii.gz", None),
    ],
)
def test_parse_name(filename: str, parsed: tuple[str, str] | None) -> None:
    assert parse_name(filename) == parsed


def test_case_folder(case_dir: Path, tiny: Case) -> None:
    [files] = find_cases(case_dir)
    assert files.case_id == "case_a" and set(files.images) == set(MODALITIES) and files.seg is not None
    case = load_case(files)
    _assert_same(case, tiny)
    assert case.seg.dtype == np.uint8 and case.shape == SHAPE
    assert case.spacing == (1.0, 1.0, 1.0) and case.affine.dtype == np.float64
    assert load_case(case_dir).case_id == "case_a"  # a folder is accepted directly


def test_folder_of_cases(synthetic_root: Path) -> None:
    found = find_cases(synthetic_root)
    assert [c.case_id for c in found] == ["synth_000", "synth_001", "synth_002", "synth_003"]
    case = load_case(found[1])
    assert case.shape == (48, 48, 32) and set(np.unique(case.seg)) <= set(LABELS)


def test_nested_folders(tmp_path: Path) -> None:
    write_case(make_synthetic_case("deep", shape=SHAPE, seed=1), tmp_path / "a" / "b" / "c")
    write_case(make_synthetic_case("shallow", shape=SHAPE, seed=2), tmp_path / "x")
    assert [c.case_id for c in find_cases(tmp_path)] == ["deep", "shallow"]


def test_flat_folder_groups_by_prefix(tmp_path: Path) -> None:
    for case_id in ("p1", "p2"):
        write_case(make_synthetic_case(case_id, shape=SHAPE), tmp_path / "stage")
        for file in (tmp_path / "stage" / case_id).iterdir():
            file.rename(tmp_path / file.name)
    found = find_cases(tmp_path)
    assert [c.case_id for c in found] == ["p1", "p2"]
    assert found[1].images["flair"].name == "p2_flair.nii.gz"


def test_zip_of_case_folders(tmp_path: Path, case_dir: Path, tiny: Case) -> None:
    archive = _zip(tmp_path / "cases.zip", case_dir.parent)
    with open_cases(archive) as [files]:
        assert files.case_id == "case_a"
        _assert_same(load_case(files), tiny)
        extracted = files.images["t1"]
    assert not extracted.exists()  # the extraction folder is removed when the block ends
    _assert_same(load_case(archive), tiny)  # load_case opens a zip of one case itself


def test_zip_with_files_at_root(tmp_path: Path, case_dir: Path, tiny: Case) -> None:
    with open_cases(_zip(tmp_path / "upload.zip", case_dir)) as [files]:
        assert files.case_id == "case_a"  # named by the file prefix, not by the temporary folder
        _assert_same(load_case(files), tiny)


def test_zip_with_bare_modality_names(tmp_path: Path, case_dir: Path) -> None:
    for file in case_dir.iterdir():
        file.rename(file.with_name(file.name.removeprefix("case_a_")))
    with open_cases(_zip(tmp_path / "patient7.zip", case_dir)) as [files]:
        assert files.case_id == "patient7" and files.images["t2"].name == "t2.nii.gz"


def test_symlinked_case_folder(tmp_path: Path, case_dir: Path) -> None:
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "linked").symlink_to(case_dir, target_is_directory=True)
    (tmp_path / "links" / "loop").symlink_to(tmp_path / "links", target_is_directory=True)
    assert [c.case_id for c in find_cases(tmp_path / "links")] == ["linked"]


def test_brats2023_names(tmp_path: Path, tiny: Case) -> None:
    files = write_case(tiny, tmp_path, naming="brats2023")
    assert files.images["t1ce"].name == "case_a-t1c.nii.gz"
    [found] = find_cases(tmp_path)
    assert found.images == files.images and found.seg == files.seg and found.brats2023
    _assert_same(load_case(found), tiny)


def test_brats2023_segmentation_reads_its_label_3_as_enhancing_tumour(tmp_path: Path, tiny: Case) -> None:
    files = write_case(tiny, tmp_path, naming="brats2023")
    stored = np.asanyarray(nib.load(files.seg).dataobj)
    assert 3 in stored and 4 not in stored  # BraTS 2023+: 1 NETC, 2 SNFH, 3 ET
    assert (load_case(files).seg == 4).sum() == (stored == 3).sum() == (tiny.seg == 4).sum()
    _save(files.seg, tiny.seg, tiny.affine)  # 0/1/2/4 under 2023 names (renamed older files) is read as it is
    _assert_same(load_case(files), tiny)


def test_brats2023_segmentation_with_both_3_and_4_is_refused(tmp_path: Path, tiny: Case) -> None:
    files = write_case(tiny, tmp_path, naming="brats2023")
    seg = tiny.seg.copy()
    seg[0, 0, 0] = 3
    _save(files.seg, seg, tiny.affine)
    with _raises(r"case_a-seg\.nii\.gz: segmentation has labels outside \{0, 1, 2, 4\}, or \{0, 1, 2, 3\} for "
                 r"BraTS 2023\+ names: 3"):
        load_case(files)


def test_upper_case_names(case_dir: Path, tiny: Case) -> None:
    for file in case_dir.iterdir():
        file.rename(file.with_name(file.name.upper()))
    [files] = find_cases(case_dir)
    assert files.images["t1ce"].name == "CASE_A_T1CE.NII.GZ"
    _assert_same(load_case(files), tiny)


def test_misnamed_seg_of_brats2020_case_355(case_dir: Path, tiny: Case) -> None:
    seg = case_dir / "case_a_seg.nii.gz"
    _save(case_dir / "W39_1998.09.19_Segm.nii", np.asanyarray(nib.load(seg).dataobj), tiny.affine)
    seg.unlink()
    [files] = find_cases(case_dir)
    assert files.seg.name == "W39_1998.09.19_Segm.nii"
    np.testing.assert_array_equal(load_case(files).seg, tiny.seg)


def test_stray_files_ignored(case_dir: Path, tiny: Case) -> None:
    (case_dir / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (case_dir / "._case_a_t1.nii.gz").write_bytes(b"resource fork")
    (case_dir / ".hidden_t1.nii.gz").write_bytes(b"hidden")
    (case_dir / "notes.txt").write_text("scanner notes")
    (case_dir / "name_mapping.csv").write_text("a,b\n")
    (case_dir / "dataset.json").write_text("{}")
    (case_dir / "__MACOSX").mkdir()
    (case_dir / "__MACOSX" / "case_a_t1.nii.gz").write_bytes(b"junk")
    [files] = find_cases(case_dir)
    assert files.images["t1"].name == "case_a_t1.nii.gz"
    _assert_same(load_case(files), tiny)


def test_stray_files_ignored_in_zip(tmp_path: Path, case_dir: Path, tiny: Case) -> None:
    extra = {"__MACOSX/case_a/._case_a_t1.nii.gz": b"fork", "case_a/.DS_Store": b"x", "README.txt": b"hi"}
    with open_cases(_zip(tmp_path / "mac.zip", case_dir.parent, extra)) as [files]:
        _assert_same(load_case(files), tiny)


def test_case_without_seg(case_dir: Path) -> None:
    (case_dir / "case_a_seg.nii.gz").unlink()
    [files] = find_cases(case_dir)
    assert files.seg is None
    case = load_case(files)
    assert case.seg is None and case.images.shape == (4, *SHAPE)


def test_each_file_read_once(case_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: Counter[str] = Counter()
    real_load = nib.load

    def counting_load(path, *args, **kwargs):
        calls[Path(path).name] += 1
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(nib, "load", counting_load)
    [files] = find_cases(case_dir)
    assert not calls  # finding reads nothing
    load_case(files)
    assert sorted(calls) == sorted(p.name for p in case_dir.iterdir()) and set(calls.values()) == {1}
    calls.clear()
    assert load_case(files, with_seg=False).seg is None
    assert "case_a_seg.nii.gz" not in calls and len(calls) == 4


def test_small_affine_difference_tolerated(case_dir: Path, tiny: Case) -> None:
    affine = tiny.affine.copy()
    affine[0, 3] += 1e-5
    _save(case_dir / "case_a_t2.nii.gz", tiny.images[2].astype(np.int16), affine)
    load_case(case_dir)


def test_trailing_singleton_dimension_squeezed(case_dir: Path, tiny: Case) -> None:
    _save(case_dir / "case_a_flair.nii.gz", tiny.images[3, ..., None].astype(np.int16), tiny.affine)
    np.testing.assert_array_equal(load_case(case_dir).images[3], tiny.images[3])


def test_float_seg_with_integral_labels_accepted(case_dir: Path, tiny: Case) -> None:
    _save(case_dir / "case_a_seg.nii.gz", tiny.seg.astype(np.float32), tiny.affine)
    seg = load_case(case_dir).seg
    assert seg.dtype == np.uint8
    np.testing.assert_array_equal(seg, tiny.seg)


@pytest.mark.real_data
def test_real_or_synthetic_case(real_or_synthetic_root: Path) -> None:
    found = find_cases(real_or_synthetic_root)
    case = load_case(found[0])
    expected_shape = (240, 240, 155) if real_or_synthetic_root == SHARED_DATA_DIR else (48, 48, 32)
    assert case.shape == expected_shape and case.images.dtype == np.float32
    assert case.seg.shape == expected_shape and set(np.unique(case.seg)) <= set(LABELS)
    assert (case.seg > 0).any() and all(s > 0 for s in case.spacing)


# -------------------------------------------------------------------------------------------- errors
def _raises(match: str):
    return pytest.raises(BratsError, match=match)


def test_missing_modality(case_dir: Path) -> None:
    (case_dir / "case_a_flair.nii.gz").unlink()
    with _raises(r"case 'case_a'.*missing modality flair \(found t1=.*case_a_t1\.nii\.gz"):
        find_cases(case_dir)


def test_duplicate_modality(case_dir: Path, tiny: Case) -> None:
    _save(case_dir / "case_a_t1.nii", tiny.images[0].astype(np.int16), tiny.affine)
    with _raises(r"two files for modality 't1': .*case_a_t1\.nii and .*case_a_t1\.nii\.gz"):
        find_cases(case_dir)


def test_duplicate_seg(case_dir: Path, tiny: Case) -> None:
    _save(case_dir / "W39_1998.09.19_Segm.nii", tiny.seg, tiny.affine)
    with _raises(r"two files for segmentation"):
        find_cases(case_dir)


def test_unattributable_seg_in_flat_folder(tmp_path: Path) -> None:
    for case_id in ("p1", "p2"):
        for file in write_case(make_synthetic_case(case_id, shape=SHAPE), tmp_path / "stage").images.values():
            file.rename(tmp_path / file.name)
    (tmp_path / "stage" / "p1" / "p1_seg.nii.gz").rename(tmp_path / "Segm.nii.gz")
    shutil.rmtree(tmp_path / "stage")
    with _raises(r"Segm\.nii\.gz: looks like a segmentation but its name does not say which case"):
        find_cases(tmp_path)


def test_files_naming_two_cases_in_one_case_folder_are_refused(case_dir: Path) -> None:
    (case_dir / "case_a_flair.nii.gz").rename(case_dir / "case_b_flair.nii.gz")  # another patient's FLAIR
    with _raises(r"case_a: the files of one case name 2 different cases: case_a \(t1, t1ce, t2, seg\); "
                 r"case_b \(flair\)"):
        find_cases(case_dir)


def test_duplicate_case_id(tmp_path: Path, tiny: Case) -> None:
    write_case(tiny, tmp_path / "train")
    write_case(tiny, tmp_path / "val")
    with _raises(r"case id 'case_a' appears twice"):
        find_cases(tmp_path)


def test_shape_mismatch(case_dir: Path, tiny: Case) -> None:
    _save(case_dir / "case_a_t2.nii.gz", tiny.images[2, :, :, :8].astype(np.int16), tiny.affine)
    with _raises(
        r"case_a_t2\.nii\.gz: shape \(32, 32, 8\) differs from .*case_a_t1\.nii\.gz shape \(32, 32, 16\)"
    ):
        load_case(case_dir)


def test_affine_mismatch(case_dir: Path, tiny: Case) -> None:
    affine = tiny.affine.copy()
    affine[0, 3] += 2.0
    _save(case_dir / "case_a_seg.nii.gz", tiny.seg, affine)
    with _raises(r"case_a_seg\.nii\.gz: affine differs from .*case_a_t1\.nii\.gz"):
        load_case(case_dir)


def test_4d_image(case_dir: Path, tiny: Case) -> None:
    _save(case_dir / "case_a_t1ce.nii.gz", np.stack([tiny.images[1]] * 2, axis=-1).astype(np.int16))
    with _raises(r"case_a_t1ce\.nii\.gz: expected a 3D image, got shape \(32, 32, 16, 2\)"):
        load_case(case_dir)


def test_labels_outside_brats_set(case_dir: Path, tiny: Case) -> None:
    seg = tiny.seg.copy()
    seg[0, 0, 0] = 5
    _save(case_dir / "case_a_seg.nii.gz", seg, tiny.affine)
    with _raises(r"case_a_seg\.nii\.gz: segmentation has labels outside \{0, 1, 2, 4\}: 5"):
        load_case(case_dir)


def test_labels_0123_under_brats2020_names_explained(case_dir: Path, tiny: Case) -> None:
    msd = np.select([tiny.seg == 2, tiny.seg == 1, tiny.seg == 4], [1, 2, 3], 0).astype(np.uint8)
    _save(case_dir / "case_a_seg.nii.gz", msd, tiny.affine)
    with _raises(r"case_a_seg\.nii\.gz: labels \[0, 1, 2, 3\] are not BraTS 2018-2021 labels 0/1/2/4 .*"
                 r"name the case's files -t1n/-t1c/-t2w/-t2f/-seg .*MSD Task01 labels \(1 edema"):
        load_case(case_dir)


@pytest.mark.parametrize("kind", ["broken link", "folder"])
def test_unreadable_file_is_named(case_dir: Path, kind: str) -> None:
    path = case_dir / "case_a_t2.nii.gz"
    path.unlink()
    if kind == "broken link":
        path.symlink_to(case_dir / "gone.nii.gz")
    else:
        path.mkdir()
    [files] = find_cases(case_dir) if kind == "broken link" else [CaseFiles("case_a", {
        m: case_dir / f"case_a_{m}.nii.gz" for m in MODALITIES})]
    with _raises(rf"case_a_t2\.nii\.gz: cannot be read: the file is a {kind}"):
        load_case(files)


def test_file_the_system_refuses_is_named(case_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))  # as for a file without read permission

    monkeypatch.setattr("brats_core.nifti.nib.load", refuse)
    with _raises(r"case_a_t1\.nii\.gz: cannot be read \(Permission denied\)"):
        load_case(case_dir)


def test_nan_in_image(case_dir: Path, tiny: Case) -> None:
    image = tiny.images[0].copy()
    image[5, 5, 5] = np.nan
    _save(case_dir / "case_a_t1.nii.gz", image, tiny.affine)
    with _raises(r"case_a_t1\.nii\.gz: image contains NaN"):
        load_case(case_dir)


def test_truncated_gzip(case_dir: Path) -> None:
    path = case_dir / "case_a_t2.nii.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with _raises(r"case_a_t2\.nii\.gz: file is truncated"):
        load_case(case_dir)


def test_corrupt_gzip(case_dir: Path) -> None:
    path = case_dir / "case_a_flair.nii.gz"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))
    with _raises(r"case_a_flair\.nii\.gz: corrupt gzip data"):
        load_case(case_dir)


def test_not_gzip_named_nii_gz(case_dir: Path) -> None:
    (case_dir / "case_a_t1.nii.gz").write_text("this is a text file, not an image\n")
    with _raises(r"case_a_t1\.nii\.gz: not gzip-compressed"):
        load_case(case_dir)


def test_gzip_compressed_file_named_nii(case_dir: Path) -> None:
    path = case_dir / "case_a_t1.nii.gz"
    path.rename(case_dir / "case_a_t1.nii")  # compressed, but named as if it were not
    with _raises(r"case_a_t1\.nii: gzip-compressed although named \.nii: rename it \.nii\.gz"):
        load_case(case_dir)


def test_not_nifti_inside_gzip(case_dir: Path) -> None:
    (case_dir / "case_a_t1.nii.gz").write_bytes(gzip.compress(b"<html>not an image</html>" * 40))
    with _raises(r"case_a_t1\.nii\.gz: not a valid NIfTI file"):
        load_case(case_dir)


def test_empty_folder(tmp_path: Path) -> None:
    with _raises(r"no NIfTI files \(\.nii or \.nii\.gz\) found"):
        find_cases(tmp_path)


def test_unrecognised_names_listed(tmp_path: Path, tiny: Case) -> None:
    _save(tmp_path / "brain_scan.nii.gz", tiny.images[0].astype(np.int16))
    with _raises(r"no BraTS case found; NIfTI files with unrecognised names: .*brain_scan\.nii\.gz"):
        find_cases(tmp_path)


def test_empty_zip(tmp_path: Path) -> None:
    zipfile.ZipFile(tmp_path / "empty.zip", "w").close()
    with _raises(r"empty\.zip: no NIfTI files"), open_cases(tmp_path / "empty.zip"):
        pass
    with _raises(r"empty\.zip: expected a case folder, a folder of cases or a \.zip archive; open it with"):
        find_cases(tmp_path / "empty.zip")  # find_cases reads folders; open_cases also opens zips


def test_nonexistent_path(tmp_path: Path) -> None:
    with _raises(r"does_not_exist: no such file or folder"):
        find_cases(tmp_path / "does_not_exist")
    with _raises(r"no such file or folder"):
        load_case(tmp_path / "does_not_exist")


def test_plain_file_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with _raises(r"notes\.txt: expected a case folder, a folder of cases or a \.zip archive"):
        find_cases(tmp_path / "notes.txt")


def test_load_case_on_folder_with_several_cases(synthetic_root: Path) -> None:
    with _raises(r"expected one case, found 4"):
        load_case(synthetic_root)


def test_error_in_zip_names_the_archive(tmp_path: Path, case_dir: Path) -> None:
    (case_dir / "case_a_t2.nii.gz").write_text("not an image")
    with open_cases(_zip(tmp_path / "upload.zip", case_dir.parent)) as [files], \
            _raises(r"upload\.zip/case_a/case_a_t2\.nii\.gz: not gzip-compressed"):
        load_case(files)
    (case_dir / "case_a_flair.nii.gz").unlink()
    with _raises(r"case 'case_a' in .*upload2\.zip/case_a: missing modality flair"):
        load_case(_zip(tmp_path / "upload2.zip", case_dir.parent))


def test_case_files_missing_modality_key(case_dir: Path) -> None:
    [files] = find_cases(case_dir)
    partial = CaseFiles(files.case_id, {k: v for k, v in files.images.items() if k != "t2"}, files.seg)
    with _raises(r"case 'case_a': no file given for modality t2"):
        load_case(partial)

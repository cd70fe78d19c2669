"""Uploads unpacked once (:mod:`brats_core.uploads`), by the API and the UI alike: case ids, every bad input."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from support import case_paths, case_zip, zip_bytes

from brats_core.archive import ZipLimits
from brats_core.cases import CaseFiles, load_case
from brats_core.errors import BratsError
from brats_core.synth import make_synthetic_case, write_case
from brats_core.uploads import UploadLimits, unpack_upload
from sspp_unet_api.app.config import Settings
from sspp_unet_api.app.uploads import ingest
from streamlit_app.selection import LocalSelection

SHAPE = (24, 24, 12)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> CaseFiles:
    return write_case(make_synthetic_case("BraTS20_007", shape=SHAPE, seed=1), tmp_path_factory.mktemp("case"))


def _loose(files: CaseFiles) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in case_paths(files)]


def _streams(named: list[tuple[str, bytes]]) -> list[tuple[str, io.BytesIO]]:
    return [(name, io.BytesIO(data)) for name, data in named]


def _root_zip(files: CaseFiles) -> list[tuple[str, bytes]]:
    return [("scan.zip", zip_bytes(_loose(files)))]


@pytest.mark.parametrize("make", [_loose, _root_zip, lambda f: [("cases.zip", case_zip([f]))]])
def test_the_api_and_the_ui_name_a_case_alike(make, case: CaseFiles, tmp_path: Path) -> None:
    named = make(case)
    (tmp_path / "api").mkdir()
    [record] = ingest(_streams(named), tmp_path / "api", Settings())
    local = LocalSelection.open(named)
    try:
        assert list(local.cases) == [record["case_id"]] == ["BraTS20_007"]
        assert local.load("BraTS20_007").shape == tuple(record["shape"])
    finally:
        local.close()


def test_unpacked_files_load_and_messages_name_the_upload(case: CaseFiles, tmp_path: Path) -> None:
    broken = [(n, b"not an image" if n.endswith("_t2.nii.gz") else d) for n, d in _loose(case)]
    [files] = unpack_upload(_streams(broken), tmp_path)
    assert files.case_id == "BraTS20_007" and files.images["t1"].is_file()
    with pytest.raises(BratsError, match=r"^the upload/BraTS20_007/BraTS20_007_t2\.nii\.gz: not gzip") as info:
        load_case(files)
    assert str(tmp_path) not in str(info.value)


def _bad(case: CaseFiles) -> dict[str, tuple[list[tuple[str, bytes]], str]]:
    loose = _loose(case)
    other = make_synthetic_case("BraTS20_008", shape=SHAPE, seed=2)
    return {
        "nothing": ([], "no file uploaded"),
        "not NIfTI": ([("notes.txt", b"x")], r"file 'notes\.txt' is neither a \.zip nor a NIfTI file"),
        "zip and files": ([("a.zip", b"PK"), *loose[:1]], "send either one .zip or the NIfTI files"),
        "too many files": ([*loose, ("BraTS20_007_t1n.nii.gz", b"x")], "6 NIfTI files uploaded; one case has at most 5"),
        "same name": ([loose[0], loose[0]], rf"file '{loose[0][0]}' sent twice: every file of a case needs its own"),
        "same name but case": ([loose[0], (loose[0][0].upper(), loose[0][1])],
                               rf"file '{loose[0][0].upper()}' sent and '{loose[0][0]}' \(names differ only in case\)"),
        "unusable name": ([("..", b"x")], "no usable characters"),
        "zip member": ([("c.zip", zip_bytes([("c/notes.txt", b"x")]))], r"member 'c/notes\.txt' is not a NIfTI"),
        "corrupt zip": ([("c.zip", b"PK\x03\x04garbage")], "not a valid zip"),
        "stray file": ([*loose[:4], ("brain.nii.gz", loose[0][1])], r"'case/brain\.nii\.gz' is not part of"),
        "missing modality": (loose[:3], "missing modality flair"),
        "two patients mixed": ([*loose[:3], ("BraTS20_008_flair.nii.gz", loose[3][1])],
                               r"the files of one case name 2 different cases: BraTS20_007 \(t1, t1ce, t2\); "
                               r"BraTS20_008 \(flair\).*were files of two patients mixed\?"),
        "too many cases": ([("two.zip", case_zip([case, write_case(other, case.images["t1"].parents[2] / "o")]))],
                           "2 cases uploaded; at most 1 per upload"),
        "zip limits": ([("c.zip", case_zip([case]))], "at most 2 are accepted"),
    }


def test_every_bad_upload_is_refused_naming_the_file(case: CaseFiles, tmp_path: Path) -> None:
    limits = UploadLimits(zip_limits=ZipLimits(max_members=10), max_cases=1)
    for label, (named, message) in _bad(case).items():
        folder = tmp_path / label.replace(" ", "_")
        folder.mkdir()
        use = UploadLimits(zip_limits=ZipLimits(max_members=2)) if label == "zip limits" else limits
        with pytest.raises(BratsError, match=message):
            unpack_upload(_streams(named), folder, use)
        assert not [p for p in folder.rglob("*.zip")], label  # a zip is read in place, never copied

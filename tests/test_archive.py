"""Safe zip extraction (:mod:`brats_core.archive`) and zips opened as cases (:func:`brats_core.cases.open_cases`)."""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from brats_core.archive import ZipLimits, safe_extract_zip
from brats_core.cases import open_cases
from brats_core.errors import BratsError


def _raises(pattern: str):
    return pytest.raises(BratsError, match=pattern)


# ------------------------------------------------------------------------------------------ zip safety
def _zip_members(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x.nii.gz", r"'\.\.' component"),
        ("case/../../x.nii.gz", r"'\.\.' component"),
        ("/tmp/x.nii.gz", "absolute path"),
        ("C:/x.nii.gz", "drive letter"),
        ("case\\..\\x.nii.gz", "backslash"),
    ],
)
def test_zip_unsafe_member_names(tmp_path: Path, name: str, reason: str) -> None:
    archive = _zip_members(tmp_path / "evil.zip", {"ok.txt": b"fine", name: b"payload"})
    dest = tmp_path / "out" / "dest"
    with _raises(rf"archive 'evil\.zip': member .* {reason}"):
        safe_extract_zip(archive, dest)
    assert not any(tmp_path.rglob("x.nii.gz")) and not any((tmp_path / "out").rglob("*"))


def test_zip_symlink_member(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("case/link_t1.nii.gz")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as archive:
        archive.writestr(info, "/etc/passwd")
    with _raises(r"member 'case/link_t1\.nii\.gz' is a symbolic link"):
        safe_extract_zip(tmp_path / "link.zip", tmp_path / "dest")


def test_zip_too_many_members(tmp_path: Path) -> None:
    archive = _zip_members(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(5)})
    with _raises(r"has 5 files; at most 4 are accepted"):
        safe_extract_zip(archive, tmp_path / "dest", ZipLimits(max_members=4))


def test_zip_bomb_ratio(tmp_path: Path) -> None:
    archive = _zip_members(tmp_path / "bomb.zip", {"zeros.nii": bytes(2 * 1024**2)})
    limits = ZipLimits(ratio_floor=1024**2)
    with _raises(r"compression ratio of \d+:1 \(limit 200:1\); refusing a possible zip bomb"):
        safe_extract_zip(archive, tmp_path / "dest", limits)
    assert not (tmp_path / "dest" / "zeros.nii").exists()


def test_zip_member_larger_than_declared(tmp_path: Path) -> None:
    archive = _zip_members(tmp_path / "liar.zip", {"data.nii": bytes(range(256)) * 64})
    raw = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local and central headers
        start = raw.index(signature)
        raw[start + offset : start + offset + 4] = (100).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    with _raises(r"liar\.zip"):
        safe_extract_zip(archive, tmp_path / "dest")
    assert not (tmp_path / "dest" / "data.nii").exists()


def test_zip_size_limits(tmp_path: Path) -> None:
    archive = _zip_members(tmp_path / "big.zip", {"a.nii": b"a" * 4000, "b.nii": b"b" * 4000})
    with _raises(r"member 'a\.nii' is 0 MiB uncompressed"):
        safe_extract_zip(archive, tmp_path / "dest", ZipLimits(max_member_size=1000))
    with _raises(r"big\.zip' is 0 MiB uncompressed"):
        safe_extract_zip(archive, tmp_path / "dest", ZipLimits(max_total_uncompressed=6000))


def test_corrupt_zip(tmp_path: Path) -> None:
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with _raises(r"archive 'broken\.zip' is not a valid zip archive"):
        safe_extract_zip(tmp_path / "broken.zip", tmp_path / "dest")
    with _raises(r"broken\.zip' is not a valid zip archive"), open_cases(tmp_path / "broken.zip"):
        pass


def test_zip_extracts_only_regular_files(tmp_path: Path) -> None:
    archive = _zip_members(
        tmp_path / "ok.zip",
        {"case/": b"", "case/a_t1.nii.gz": b"1", "__MACOSX/case/._a_t1.nii.gz": b"2", "case/.DS_Store": b"3"},
    )
    written = safe_extract_zip(archive, tmp_path / "dest")
    assert written == [(tmp_path / "dest" / "case" / "a_t1.nii.gz").resolve()]
    assert sorted(p.name for p in (tmp_path / "dest").rglob("*")) == ["a_t1.nii.gz", "case"]


def test_zip_temp_folder_removed_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    archive = _zip_members(tmp_path / "evil.zip", {"../x.nii.gz": b"x"})
    with _raises("path traversal"), open_cases(archive):
        pass
    assert not any((tmp_path / "tmp").iterdir())
    shutil.rmtree(tmp_path / "tmp")

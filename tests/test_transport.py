"""Packing a slice cache for a machine without NIfTI sources, and unpacking it there."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

from brats_core.cache import build_cache, open_cache
from brats_core.cases import find_cases
from brats_core.config import PreprocessConfig
from brats_core.errors import BratsError
from brats_core.transport import main, pack, unpack


@pytest.fixture(scope="module")
def built(synthetic_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    entries = build_cache(find_cases(synthetic_root), PreprocessConfig(size=32), cache_root=root, progress=False)
    return entries[0].path.parent, entries


def test_round_trip_keeps_labels_and_bounds_image_error(built, tmp_path):
    key_dir, entries = built
    archive = pack(key_dir, tmp_path / "cache.tar.xz", [entries[0].case_id, entries[1].case_id])
    restored = open_cache(unpack(archive, tmp_path / "restored"))
    assert [e.case_id for e in restored] == [entries[0].case_id, entries[1].case_id]
    for original, copy in zip(entries, restored, strict=False):
        assert copy.images.dtype == np.float16 and copy.images.shape == original.images.shape
        source = np.asarray(original.images, dtype=np.float32)
        half_step = (source.max(axis=(2, 3)) - source.min(axis=(2, 3))) / 255 / 2
        error = np.abs(np.asarray(copy.images, dtype=np.float32) - source).max(axis=(2, 3))
        assert np.all(error <= half_step + 0.01)  # + float16 rounding
        np.testing.assert_array_equal(copy.labels, original.labels)
        np.testing.assert_array_equal(copy.native_labels, original.native_labels)
        np.testing.assert_array_equal(copy.original_labels(), original.original_labels())
        assert copy.geometry == original.geometry


def test_unpack_rejects_a_non_archive_and_unsafe_members(tmp_path):
    bad = tmp_path / "bad.tar.xz"
    bad.write_bytes(b"not an archive")
    with pytest.raises(BratsError, match="bad.tar.xz: not a packed slice cache"):
        unpack(bad, tmp_path / "out")
    evil = tmp_path / "evil.tar.xz"
    with tarfile.open(evil, "w:xz") as tar:
        (tmp_path / "x").write_text("x")
        tar.add(tmp_path / "x", arcname="key/../../x")
    with pytest.raises(BratsError, match="unexpected member"):
        unpack(evil, tmp_path / "out")
    absolute = tmp_path / "absolute.tar.xz"  # "/tmp/x" would be written to /tmp/x, outside the cache root
    outside = Path(tempfile.gettempdir()) / f"brats_transport_{os.getpid()}"
    with tarfile.open(absolute, "w:xz") as tar:
        info = tarfile.TarInfo(str(outside))
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BratsError, match="unexpected member"):
        unpack(absolute, tmp_path / "out")
    assert not outside.exists()


def test_cli_pack_unknown_case_is_an_error(built, tmp_path, capsys):
    key_dir, _ = built
    assert main(["pack", str(key_dir), str(tmp_path / "a.tar.xz"), "--cases", "nope"]) == 1
    assert "nope" in capsys.readouterr().err

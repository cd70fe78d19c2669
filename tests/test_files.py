"""Crash-safe writes (brats_core.files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_core.files import atomic_path


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["file.txt"]

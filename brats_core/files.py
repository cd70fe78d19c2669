"""Crash-safe file writing shared by every package."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from brats_core.errors import BratsError


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; renamed onto ``path`` when the block succeeds, removed if it
    fails, so a crash never leaves half a file at ``path``. Parent folders are created. The temporary name is
    unique per call, so threads and processes writing the same file never share one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def check_output_paths(**paths: Path | str | None) -> None:
    """Before any work: :class:`BratsError` naming the option when a file stands where one of ``paths`` (by option
    name, e.g. ``export=...``; None is skipped) needs a folder, so that a long run never fails at its end."""
    for option, path in paths.items():
        if path is None:
            continue
        for ancestor in Path(path).absolute().parents:
            if ancestor.exists():
                if not ancestor.is_dir():
                    raise BratsError(f"--{option.replace('_', '-')} {path}: {ancestor} is a file, not a folder")
                break


def describe_os_error(exc: OSError) -> str:
    """A filesystem error on a path the user gave, in one line: ``<path>: <what the system said>``."""
    hint = " (a file stands where a folder is needed)" if isinstance(exc, (FileExistsError, NotADirectoryError)) else ""
    return f"{exc.filename}: {exc.strerror}{hint}" if exc.filename else str(exc)

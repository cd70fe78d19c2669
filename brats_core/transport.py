"""Move a slice cache to a machine without the NIfTI sources (a GPU box, a cluster), in a compact archive.

``pack`` stores each cached case with its images quantised to uint8 (per slice and modality: 255 steps
between the minimum and the maximum, so the error is at most half a step, about 0.02 z-units on BraTS) and its
labels, brain mask, native labels and metadata unchanged, all in one ``.tar.xz``. ``unpack`` rebuilds the cache
folder (float16 images) that :func:`brats_core.cache.open_cache` and ``train.py --from-cache`` read.

    python -m brats_core.transport pack CACHE_KEY_DIR OUT.tar.xz [--cases ID ...]
    python -m brats_core.transport unpack OUT.tar.xz CACHE_ROOT
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from brats_core.cache import open_cache
from brats_core.errors import BratsError

_PLAIN = ("labels.npy", "brain.npy", "native_labels.npy", "meta.json")


def _quantise(images: np.ndarray) -> dict[str, np.ndarray]:
    data = np.asarray(images, dtype=np.float32)
    lo = data.min(axis=(2, 3), keepdims=True)
    step = np.maximum(data.max(axis=(2, 3), keepdims=True) - lo, 1e-6) / 255.0
    codes = np.rint((data - lo) / step).astype(np.uint8)
    return {"codes": codes, "lo": lo.astype(np.float32), "step": step.astype(np.float32)}


def _dequantise(packed: dict[str, np.ndarray]) -> np.ndarray:
    return (packed["codes"].astype(np.float32) * packed["step"] + packed["lo"]).astype(np.float16)


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def pack(key_dir: Path | str, out: Path | str, case_ids: Iterable[str] | None = None) -> Path:
    """Write the cached cases of ``key_dir`` (all, or ``case_ids``) into the archive ``out``."""
    key_dir, out = Path(key_dir), Path(out)
    entries = open_cache(key_dir, case_ids)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:xz", preset=6) as tar:
        _add_bytes(tar, f"{key_dir.name}/config.json", (key_dir / "config.json").read_bytes())
        for entry in entries:
            buffer = io.BytesIO()
            np.savez(buffer, **_quantise(entry.images))
            _add_bytes(tar, f"{key_dir.name}/{entry.case_id}/images.npz", buffer.getvalue())
            for name in _PLAIN:
                if (entry.path / name).exists():
                    _add_bytes(tar, f"{key_dir.name}/{entry.case_id}/{name}", (entry.path / name).read_bytes())
    return out


def unpack(archive: Path | str, cache_root: Path | str) -> Path:
    """Rebuild the cache folder from ``archive`` under ``cache_root``; returns the key folder."""
    archive, cache_root = Path(archive), Path(cache_root)
    try:
        tar = tarfile.open(archive, "r:xz")  # noqa: SIM115 - closed by the with-block below
    except (OSError, tarfile.TarError) as exc:
        raise BratsError(f"{archive}: not a packed slice cache ({exc})") from exc
    key_dirs: set[Path] = set()
    with tar:
        for member in tar.getmembers():
            name = Path(member.name)
            parts = name.parts
            if not member.isfile() or name.is_absolute() or len(parts) not in (2, 3) or ".." in parts:
                raise BratsError(f"{archive}: unexpected member {member.name!r}")
            target = cache_root.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            payload = tar.extractfile(member).read()
            if parts[-1] == "images.npz":
                with np.load(io.BytesIO(payload)) as packed:
                    np.save(target.with_name("images.npy"), _dequantise(dict(packed)))
            else:
                target.write_bytes(payload)
            key_dirs.add(cache_root / parts[0])
    if len(key_dirs) != 1:
        raise BratsError(f"{archive}: expected one cache key folder, found {len(key_dirs)}")
    key_dir = key_dirs.pop()
    open_cache(key_dir)  # validates what was written
    return key_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brats_core.transport", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_pack = sub.add_parser("pack", help="pack a cache key folder into a .tar.xz")
    p_pack.add_argument("key_dir", type=Path)
    p_pack.add_argument("out", type=Path)
    p_pack.add_argument("--cases", nargs="+", default=None, help="case ids to pack (default: all)")
    p_unpack = sub.add_parser("unpack", help="rebuild a cache folder from a .tar.xz")
    p_unpack.add_argument("archive", type=Path)
    p_unpack.add_argument("cache_root", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            out = pack(args.key_dir, args.out, args.cases)
            print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")
        else:
            print(unpack(args.archive, args.cache_root))
    except BratsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fusion's checkpoint: a JSON manifest of its member exports (``brats train fusion --cv OUT``).

A fusion has no weights of its own. What makes it a model is which exports it averages and the post-processing
tuned on its own out-of-fold predictions; that CV's scores come with it::

    {"format": "brats-fusion", "version": 1,
     "members": [{"model": "unet", "file": "unet.pt", "sha256": "..."}, ...],   # files relative to the manifest
     "weights": [1.0, 1.0],
     "postprocess": PostprocessConfig.to_dict(),
     "info": {"created": "YYYY-MM-DD", "cv": {"cases": 27, "scores": {...}, "scores_without_postprocess": {...},
                                             "postprocess_tuning": {...}}}}

The scores and the tuning hold for exactly those members, so a member whose bytes no longer match its recorded
checksum is refused. The CV is read from ``<OUT>/fusion/cv`` (``python -m Deep_Learning_Model.cv score --model
fusion --out OUT``), like a deep model's final export reads ``<OUT>/<model>/cv``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from brats_core.config import REPO_ROOT
from brats_core.errors import BratsError, CheckpointError
from brats_core.files import atomic_path
from brats_core.helptext import PlainHelpFormatter, description
from brats_core.postprocess import PostprocessConfig
from brats_core.provenance import cv_record, today
from Deep_Learning_Model.serialization import plain_data

FORMAT, VERSION = "brats-fusion", 1
SHIPPED_DIR = REPO_ROOT / "Deep_Learning_Model" / "checkpoints"
#: Models fused by default, each from ``<folder>/<name>.pt``.
FUSED: tuple[str, ...] = ("unet", "sspp")


@dataclass(frozen=True)
class Manifest:
    """A read manifest: member exports (absolute paths, checked), weights, post-processing and its record."""

    path: Path
    members: tuple[Path, ...]
    weights: tuple[float, ...]
    postprocess: PostprocessConfig
    info: dict


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: Path | str) -> Manifest:
    """Read and check the manifest at ``path``; :class:`CheckpointError` names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: fusion manifest not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable fusion manifest ({type(exc).__name__}: {exc}); the fusion "
                              f"takes its JSON manifest (fusion.json) or a folder of member exports") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fusion manifest (expected format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: fusion manifest version {data.get('version')!r}, this code reads {VERSION}")
    try:
        entries = [(str(m["file"]), str(m["sha256"])) for m in data["members"]]
        weights = tuple(float(w) for w in data["weights"])
        postprocess = PostprocessConfig.from_dict(data["postprocess"])
        info = dict(data.get("info") or {})
    except (BratsError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid fusion manifest ({type(exc).__name__}: {exc})") from None
    members = tuple(path.parent / file for file, _ in entries)
    for member, (file, recorded) in zip(members, entries, strict=True):
        if not member.is_file():
            raise CheckpointError(f"{path}: member export {file} not found (looked for {member})")
        if sha256_of(member) != recorded:
            raise CheckpointError(
                f"{path}: member export {member} is not the one its CV scored (sha256 differs); "
                f"rewrite the manifest with `brats train fusion --cv OUT` after scoring the new members' CV"
            )
    return Manifest(path, members, weights, postprocess, info)


def _member_cases(export: Path) -> tuple[str, float | None]:
    """(architecture, number of cases of its recorded CV or None) of one member export."""
    from Deep_Learning_Model.export import read_export

    payload = read_export(export)
    cv = payload.get("info", {}).get("cv", {})
    return str(payload.get("model_config", {}).get("arch", "?")), cv.get("cases")


def write_manifest(out: Path | str, members: Sequence[Path], cv_out: Path,
                   weights: Sequence[float] | None = None) -> Path:
    """Write the manifest of the fusion of ``members`` with the post-processing and scores of the fusion's CV in
    ``cv_out/fusion/cv`` (:func:`brats_core.provenance.cv_record`)."""
    from Deep_Learning_Model.cv_oof import cv_dir

    out, cv = Path(out), cv_dir(Path(cv_out), "fusion")
    if len(members) < 2:
        raise BratsError(f"a fusion needs at least two member exports, got {len(members)}")
    weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
    if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
        raise BratsError(f"fusion weights {weights} must be one non-negative number per member, not all 0")
    try:
        record = cv_record(cv)
        postprocess = PostprocessConfig.from_dict(record["postprocess_tuning"]["chosen"])
    except FileNotFoundError as exc:
        raise BratsError(f"{exc.filename}: no fusion CV there (run `python -m Deep_Learning_Model.cv score "
                         f"--model fusion --out {cv_out}` first)") from None
    except (OSError, ValueError, KeyError, TypeError, BratsError) as exc:
        raise BratsError(f"{cv}: not a fusion CV of Deep_Learning_Model.cv ({type(exc).__name__}: {exc})") from None
    entries = []
    for member in map(Path, members):
        arch, cases = _member_cases(member)
        if cases is not None and cases != record["cases"]:
            raise BratsError(f"{member}: its CV covers {cases} cases, the fusion's CV in {cv} {record['cases']}")
        entries.append({"model": arch, "file": Path(os.path.relpath(member.resolve(), out.parent.resolve())).as_posix(),
                        "sha256": sha256_of(member)})
    payload = {"format": FORMAT, "version": VERSION, "members": entries, "weights": weights,
               "postprocess": postprocess.to_dict(),
               "info": {"created": today(), "cv": record}}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(plain_data(payload, "fusion manifest"), indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    """``brats train fusion --cv OUT [--members A.pt B.pt] [--weights 1 1] [--out fusion.json]``."""
    parser = argparse.ArgumentParser(prog="brats train fusion", description=description(__doc__),
                                     formatter_class=PlainHelpFormatter)
    parser.add_argument("--cv", required=True, type=Path, help="CV output folder holding fusion/cv/ (cv score "
                        "--model fusion --out OUT)")
    parser.add_argument("--members", type=Path, nargs="+", default=[SHIPPED_DIR / f"{m}.pt" for m in FUSED],
                        help="member exports (default: the shipped unet.pt and sspp.pt)")
    parser.add_argument("--weights", type=float, nargs="+", help="one weight per member (default: equal)")
    parser.add_argument("--out", type=Path, help="manifest to write (default: fusion.json beside the first member)")
    args = parser.parse_args(argv)
    out = args.out or args.members[0].parent / "fusion.json"
    try:
        write_manifest(out, args.members, args.cv, args.weights)
        read_manifest(out)
    except BratsError as exc:
        print(f"brats train fusion: error: {exc}", file=sys.stderr)
        return 1
    print(f"brats train fusion: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

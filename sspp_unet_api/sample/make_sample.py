"""Rebuild ``sample_case.zip`` from one shared case, byte for byte: sorted members, fixed timestamps, stored.

Usage: ``python sspp_unet_api/sample/make_sample.py [CASE_ID]`` (default: the case named in ATTRIBUTION.md).
The members are already gzip-compressed NIfTI files, so they are stored (ZIP_STORED) rather than deflated.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from brats_core.config import SHARED_DATA_DIR

CASE_ID = "Brats18_TCIA02_370_1"
OUT = Path(__file__).resolve().parent / "sample_case.zip"
#: The earliest timestamp a zip can hold, so the archive does not depend on when it was built.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def build(case_dir: Path, out: Path) -> Path:
    """Write the ``.nii.gz`` files of ``case_dir`` into ``out`` as ``<case>/<file>``, deterministically."""
    files = sorted(case_dir.glob("*.nii.gz"))
    if len(files) != 5:
        raise SystemExit(f"{case_dir}: expected 5 .nii.gz files (4 modalities + seg), found {len(files)}")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in files:
            info = zipfile.ZipInfo(f"{case_dir.name}/{path.name}", date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.create_system = 3
            archive.writestr(info, path.read_bytes())
    return out


if __name__ == "__main__":
    case_id = sys.argv[1] if len(sys.argv) > 1 else CASE_ID
    print(build(SHARED_DATA_DIR / case_id, OUT))

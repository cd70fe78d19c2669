"""The user's file selection read locally: saved once to a private temporary folder, its cases loaded lazily.

The files are unpacked as the API unpacks an upload (:func:`brats_core.uploads.unpack_upload`), so a case has
the same id here and on the server.

The images shown in the UI come from these local files; only the predicted segmentation comes back from the
API. A selection is identified by the SHA-256 of its names and bytes, so a rerun never reloads or re-uploads.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from brats_core.cases import Case, CaseFiles, load_case
from brats_core.errors import BratsError
from brats_core.evaluation import check_prediction
from brats_core.uploads import unpack_upload

#: One chosen file: (name as the user's browser gave it, content).
NamedBytes = tuple[str, bytes]


def selection_digest(files: Sequence[NamedBytes]) -> str:
    """SHA-256 over the sorted (name, content) pairs: equal selections have equal digests."""
    digest = hashlib.sha256()
    for name, data in sorted(files, key=lambda item: item[0]):
        digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


@dataclass
class LocalSelection:
    """The files of one selection in a temporary folder (removed by :meth:`close` or garbage collection)."""

    cases: dict[str, CaseFiles]
    _folder: tempfile.TemporaryDirectory = field(repr=False)

    @classmethod
    def open(cls, files: Sequence[NamedBytes]) -> LocalSelection:
        """Save ``files`` (one .zip, or the NIfTI files of one case) and find their cases.

        Raises :class:`BratsError` naming the file and the problem (bad zip, missing modality, ...).
        """
        if not files:
            raise BratsError("no file selected")
        folder = tempfile.TemporaryDirectory(prefix="brats_ui_")
        try:
            found = unpack_upload([(name, io.BytesIO(data)) for name, data in files], Path(folder.name))
        except BaseException:
            folder.cleanup()
            raise
        return cls(cases={case.case_id: case for case in found}, _folder=folder)

    def load(self, case_id: str) -> Case:
        """Load one case of the selection (validated geometry and labels)."""
        return load_case(self.cases[case_id])

    def close(self) -> None:
        """Remove the temporary folder."""
        self._folder.cleanup()


def read_segmentation(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Decode the API's ``.nii.gz`` label map, checked by :func:`brats_core.evaluation.check_prediction`
    (uint8, the case's ``shape``, labels 0/1/2/4).

    Decompression is bounded by the size such a map can have, so a forged answer cannot exhaust memory.
    """
    name = "segmentation from the API"
    limit = int(np.prod(shape)) * 8 + 1024**2
    try:
        if data[:2] == b"\x1f\x8b":
            inflater = zlib.decompressobj(wbits=31)
            raw = inflater.decompress(data, limit)
            if inflater.unconsumed_tail:
                raise BratsError(f"{name}: decompresses to more than a label map of shape {shape} can hold")
        else:
            raw = data
        labels = np.asanyarray(nib.Nifti1Image.from_stream(io.BytesIO(raw)).dataobj)
    except BratsError:
        raise
    except Exception as exc:  # zlib/nibabel raise many types for a bad file
        raise BratsError(f"{name}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    return check_prediction(labels, shape, name)

"""Per-upload directories with random ids, JSON records, a sliding TTL and a sweeper.

Layout (every name below ``root`` is chosen by the server; client file names never become paths here)::

    <root>/<upload_id>/upload.json                  record: cases, file paths relative to the folder, expiry
    <root>/<upload_id>/files/...                    the validated input files
    <root>/<upload_id>/predictions/<prediction_id>/prediction.json, segmentation.nii.gz

An upload and its predictions expire together ``ttl`` seconds after the upload or its latest prediction.
Expired or unknown ids raise :class:`NotFoundError`; :meth:`Storage.sweep` deletes what has expired.

Changes to an upload's record and its deletion hold one lock, shared by the threads of a process and, through
an ``flock`` on ``<root>``, by every process serving the same folder: a prediction that finishes after its
upload was deleted finds it gone and removes what it wrote, instead of leaving files no record names.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from brats_core.cases import CaseFiles
from brats_core.errors import BratsError
from brats_core.files import atomic_path
from sspp_unet_api.app.uploads import case_files

try:
    import fcntl
except ImportError:  # Windows: the threads of one process are still serialised
    fcntl = None

RECORD = "upload.json"
PREDICTION_RECORD = "prediction.json"
SEGMENTATION = "segmentation.nii.gz"


class NotFoundError(LookupError):
    """An upload or prediction id that is malformed, unknown, deleted or expired."""


class StorageFull(Exception):
    """Committing an upload would leave the storage folder over its byte limit."""


@dataclass(frozen=True)
class PendingPrediction:
    """A prediction begun by :meth:`Storage.begin_prediction`: the case to segment and where its files go."""

    prediction_id: str
    upload_id: str
    case_id: str
    #: The case's files inside the upload's folder.
    files: CaseFiles
    #: The image the overlay is drawn on, relative to the upload's folder.
    image: str
    folder: Path

    @property
    def segmentation(self) -> Path:
        return self.folder / SEGMENTATION


def new_id() -> str:
    """A random (uuid4) id, never sequential."""
    return str(uuid.uuid4())


def is_valid_id(value: str) -> bool:
    """True for the canonical text of a uuid4, the only form of id the server hands out."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return parsed.version == 4 and str(parsed) == value


def shown_id(value: str, limit: int = 64) -> str:
    """A client-given id as error messages echo it: quoted, at most ``limit`` characters."""
    return repr(value if len(value) <= limit else f"{value[:limit]}...")


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Storage:
    """Uploads and predictions on disk under ``root``, expiring ``ttl`` seconds after their last use."""

    def __init__(self, root: Path, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- uploads
    def create_upload(self) -> tuple[str, Path]:
        """A new upload id and its (empty) folder; it is invisible until :meth:`commit_upload`."""
        upload_id = new_id()
        folder = self.root / upload_id
        (folder / "files").mkdir(parents=True)
        return upload_id, folder

    def commit_upload(self, upload_id: str, cases: list[dict], max_bytes: int | None = None) -> dict:
        """Record the validated ``cases`` of an upload and make it visible; returns the record.

        With ``max_bytes``: :class:`StorageFull` when the folder, this upload's unpacked files included, holds
        more (checked under the lock, so of uploads finishing together the later ones are refused).
        """
        now = self.clock()
        record = {"upload_id": upload_id, "created_at": now, "expires_at": now + self.ttl, "cases": cases}
        with self._locked():
            if max_bytes is not None and self.usage_bytes() > max_bytes:
                raise StorageFull(f"storage holds more than {max_bytes} bytes")
            _write_json(self._folder(upload_id) / RECORD, record)
        return record

    def upload(self, upload_id: str) -> dict:
        """The record of a live upload."""
        record = _read_json(self._folder(upload_id) / RECORD)
        if record is None or record["expires_at"] <= self.clock():
            raise NotFoundError(f"upload {upload_id} not found (unknown, deleted or expired)")
        return record

    def upload_dir(self, upload_id: str) -> Path:
        return self._folder(upload_id)

    def touch(self, upload_id: str) -> dict:
        """Extend a live upload's life to ``ttl`` from now (a prediction was made); returns the record."""
        with self._locked():
            record = self.upload(upload_id)
            record["expires_at"] = max(record["expires_at"], self.clock() + self.ttl)
            _write_json(self._folder(upload_id) / RECORD, record)
        return record

    def delete_upload(self, upload_id: str) -> None:
        """Delete a live upload with its predictions."""
        with self._locked():
            self.upload(upload_id)
            self.discard(upload_id)

    def discard(self, upload_id: str) -> None:
        """Remove an upload folder whatever its state (used for failed uploads)."""
        shutil.rmtree(self._folder(upload_id), ignore_errors=True)

    # --------------------------------------------------------------------------------------- predictions
    def create_prediction(self, upload_id: str) -> tuple[str, Path]:
        """A new prediction id and its folder inside the folder of an upload just found live by :meth:`touch`.

        The upload's folder is never recreated: if it was deleted meanwhile, :class:`NotFoundError`.
        """
        predictions = self._folder(upload_id) / "predictions"
        prediction_id = new_id()
        try:
            predictions.mkdir(exist_ok=True)
            (predictions / prediction_id).mkdir()
        except FileNotFoundError:
            raise NotFoundError(f"upload {upload_id} not found (unknown, deleted or expired)") from None
        return prediction_id, predictions / prediction_id

    def begin_prediction(self, upload_id: str, case_id: str | None) -> PendingPrediction:
        """Extend a live upload's life, pick its case ``case_id`` (may be None when it holds one case) and
        create the prediction's folder. Unknown upload or case: :class:`NotFoundError`."""
        record = self.touch(upload_id)
        cases = {c["case_id"]: c for c in record["cases"]}
        if case_id is None and len(cases) > 1:
            raise BratsError(f"upload holds {len(cases)} cases; name one in case_id: {', '.join(cases)}")
        case_id = case_id if case_id is not None else next(iter(cases))
        if case_id not in cases:
            raise NotFoundError(f"case {shown_id(case_id)} is not in upload {upload_id}")
        files = case_files(cases[case_id], self._folder(upload_id))
        prediction_id, out_dir = self.create_prediction(upload_id)
        return PendingPrediction(prediction_id, upload_id, case_id, files, cases[case_id]["images"]["flair"], out_dir)

    def abandon_prediction(self, pending: PendingPrediction) -> None:
        """Remove a prediction that failed; :class:`NotFoundError` if its upload was deleted meanwhile."""
        shutil.rmtree(pending.folder, ignore_errors=True)
        with self._locked():
            if self._drop_if_deleted(pending.upload_id):
                raise NotFoundError(f"upload {pending.upload_id} was deleted during the prediction")

    def commit_prediction(self, pending: PendingPrediction, result: dict) -> tuple[dict, float]:
        """Record a finished prediction (``result``: model, device, metrics...); returns the record and the
        upload's expiry. :class:`NotFoundError` if the upload was deleted or expired meanwhile; what the
        prediction wrote is then removed with it."""
        record = {"prediction_id": pending.prediction_id, "upload_id": pending.upload_id,
                  "case_id": pending.case_id, "image": pending.image, "created_at": self.clock(), **result}
        with self._locked():
            if self._drop_if_deleted(pending.upload_id):
                raise NotFoundError(f"upload {pending.upload_id} was deleted during the prediction")
            expires_at = self.upload(pending.upload_id)["expires_at"]
            _write_json(pending.folder / PREDICTION_RECORD, record)
        return record, expires_at

    def _drop_if_deleted(self, upload_id: str) -> bool:
        """True if the upload's record is gone (deleted during a prediction, which may have written files
        since); those files are removed. Call with the lock held."""
        folder = self._folder(upload_id)
        if (folder / RECORD).exists():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True

    def prediction(self, prediction_id: str) -> tuple[dict, Path]:
        """The record and folder of a prediction whose upload is live."""
        if not is_valid_id(prediction_id):
            raise NotFoundError(f"prediction {shown_id(prediction_id)} not found")
        for folder in self.root.glob(f"*/predictions/{prediction_id}"):
            record = _read_json(folder / PREDICTION_RECORD)
            if record is not None:
                try:
                    self.upload(record["upload_id"])
                except NotFoundError:
                    break
                return record, folder
        raise NotFoundError(f"prediction {prediction_id} not found (unknown, deleted or expired)")

    # --------------------------------------------------------------------------------------- maintenance
    def sweep(self) -> int:
        """Delete expired uploads and abandoned partial ones (no record after ``ttl``); returns how many."""
        removed = 0
        for folder in self.root.iterdir():
            if not folder.is_dir() or not is_valid_id(folder.name) or not self._expired(folder):
                continue
            with self._locked():  # a prediction may have extended it since
                if self._expired(folder):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
        return removed

    def _expired(self, folder: Path) -> bool:
        record = _read_json(folder / RECORD)
        try:
            return record["expires_at"] <= self.clock() if record else folder.stat().st_mtime + self.ttl <= self.clock()
        except OSError:
            return False

    def usage_bytes(self) -> int:
        """Bytes of all files under ``root``."""
        total = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except OSError:
                    continue
        return total

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The lock of record changes: this process's threads, then every process on ``root`` (``flock`` of the
        folder)."""
        with self._lock:
            if fcntl is None:
                yield
                return
            descriptor = os.open(self.root, os.O_RDONLY)  # the folder itself: no lock file among the uploads
            try:
                with suppress(OSError):  # e.g. NFS, where Linux maps flock to write locks a folder cannot take
                    fcntl.flock(descriptor, fcntl.LOCK_EX)  # released when the descriptor closes
                yield
            finally:
                os.close(descriptor)

    def _folder(self, upload_id: str) -> Path:
        if not is_valid_id(upload_id):
            raise NotFoundError(f"upload {shown_id(upload_id)} not found")
        return self.root / upload_id

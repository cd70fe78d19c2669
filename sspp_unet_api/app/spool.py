"""Multipart bodies streamed straight into the upload's own folder in the storage root, never to ``/tmp``.

Starlette's form parser spools files to the system's temporary folder, outside ``BRATS_DATA_DIR`` and outside
``BRATS_MAX_DISK_BYTES``; when a client aborted, those files stayed open. Here each file part is written, as it
arrives, to ``<upload folder>/spool/part-<n>`` (server-chosen names): the bytes count against the disk budget
while they stream in, and the caller deletes the folder on any failure, a client disconnect included.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import Request

from brats_core.errors import BratsError

#: Largest text field (``case_id``, ``model``) and the bytes buffered before a write to disk.
MAX_FIELD_BYTES = 1024
FLUSH_BYTES = 1 << 20
FILE_FIELD = "files"


class DiskBudgetExceeded(Exception):
    """The upload would take the storage folder over ``BRATS_MAX_DISK_BYTES``."""


@dataclass
class SpooledForm:
    """Text fields, and the client's file names with the server's spool files, in the order sent."""

    folder: Path
    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, Path]] = field(default_factory=list)


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    handle: BinaryIO | None = None


class _Spooler:
    """python-multipart callbacks collecting fields and file bytes; :meth:`flush` writes the bytes to disk."""

    def __init__(self, form: SpooledForm, max_files: int, fields: tuple[str, ...], budget: int) -> None:
        self.form, self.max_files, self.fields, self.budget = form, max_files, fields, budget
        self.part, self.header, self.value = _Part(), b"", b""
        self.pending: list[tuple[_Part, bytes]] = []
        self.pending_bytes = self.written = 0
        self.handles: list[BinaryIO] = []

    def callbacks(self) -> dict[str, Callable]:
        return {"on_part_begin": self.begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.data, "on_part_end": self.end}

    def begin(self) -> None:
        self.part = _Part()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def header_end(self) -> None:
        self.part.headers[self.header.lower()] = self.value
        self.header, self.value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise HTTPException(400, "malformed multipart body: a part has no Content-Disposition name")
        self.part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" not in options:
            if self.part.name not in self.fields:
                accepted = f"the text fields {', '.join(self.fields)} and " if self.fields else ""
                raise BratsError(f"unexpected form field {self.part.name[:40]!r}: this endpoint takes {accepted}"
                                 f"files in the field '{FILE_FIELD}'")
            if self.part.name in self.form.fields:
                raise BratsError(f"form field {self.part.name[:40]!r} sent twice")
            return
        if self.part.name != FILE_FIELD:
            raise BratsError(f"file sent in field {self.part.name[:40]!r}: send files in the field 'files'")
        if len(self.form.files) >= self.max_files:
            raise BratsError(f"more than {self.max_files} files uploaded; at most {self.max_files} are accepted "
                             "(one .zip, or t1, t1ce, t2, flair and an optional seg): put several cases in a .zip")
        self.part.filename = options[b"filename"].decode("utf-8", "replace")
        path = self.form.folder / f"part-{len(self.form.files)}"
        self.form.files.append((self.part.filename, path))
        self.handles.append(open(path, "xb"))  # noqa: SIM115 (closed in flush/close)
        self.part.handle = self.handles[-1]

    def data(self, data: bytes, start: int, end: int) -> None:
        if self.part.handle is None:
            self.part.data += data[start:end]
            if len(self.part.data) > MAX_FIELD_BYTES:
                raise HTTPException(413, f"form field {self.part.name[:40]!r} exceeds {MAX_FIELD_BYTES} bytes")
            return
        self.written += end - start
        if self.written > self.budget:
            raise DiskBudgetExceeded
        self.pending.append((self.part, data[start:end]))
        self.pending_bytes += end - start

    def end(self) -> None:
        if self.part.handle is None:
            self.form.fields[self.part.name] = self.part.data.decode("utf-8", "replace")

    def flush(self) -> None:
        for part, chunk in self.pending:
            part.handle.write(chunk)
        self.pending.clear()
        self.pending_bytes = 0

    def close(self) -> None:
        for handle in self.handles:
            with contextlib.suppress(OSError):
                handle.close()


def _boundary(request: Request) -> bytes:
    _, params = parse_options_header(request.headers.get("content-type", ""))
    if not params.get(b"boundary"):
        raise HTTPException(400, "malformed multipart body: no boundary in Content-Type")
    return params[b"boundary"]


async def spool_form(request: Request, folder: Path, *, max_files: int, fields: tuple[str, ...], budget: int) -> SpooledForm:
    """Parse the multipart body of ``request`` into ``folder`` (created here), writing at most ``budget`` file
    bytes. Raises 400 (malformed), 413 (long field), :class:`BratsError` (422: too many files or fields),
    :class:`DiskBudgetExceeded`, and ``ClientDisconnect``; the caller removes ``folder`` on failure."""
    form = SpooledForm(folder)
    folder.mkdir()
    spooler = _Spooler(form, max_files, fields, budget)
    parser = MultipartParser(_boundary(request), spooler.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if spooler.pending_bytes >= FLUSH_BYTES:
                await anyio.to_thread.run_sync(spooler.flush)
        parser.finalize()
        if parser.state != MultipartState.END:
            raise HTTPException(400, "malformed multipart body: it ends before its closing boundary (cut short?)")
        await anyio.to_thread.run_sync(spooler.flush)
    except FormParserError as exc:
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    finally:
        spooler.close()
    return form


def ingest_spooled(form: SpooledForm, folder: Path, ingest: Callable[..., list[dict]], *args: object) -> list[dict]:
    """``ingest([(client name, stream)...], folder, *args)`` on the spooled files, then delete the spool."""
    with contextlib.ExitStack() as stack:
        sources = [(name, stack.enter_context(open(path, "rb"))) for name, path in form.files]
        cases = ingest(sources, folder, *args)
    shutil.rmtree(form.folder, ignore_errors=True)
    return cases

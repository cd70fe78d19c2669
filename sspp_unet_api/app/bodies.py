"""The bodies of ``POST /upload`` and ``POST /predict``: multipart files streamed into a new upload (validated
and stored, or nothing kept), and the prediction request as JSON or as the text fields of a one-shot upload."""

from __future__ import annotations

import anyio.to_thread
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from brats_core.errors import BratsError
from sspp_unet_api.app.config import text_bool
from sspp_unet_api.app.inference import ServiceBusy
from sspp_unet_api.app.memory import trimmed
from sspp_unet_api.app.schemas import PredictRequest
from sspp_unet_api.app.spool import DiskBudgetExceeded, ingest_spooled, spool_form
from sspp_unet_api.app.storage import StorageFull
from sspp_unet_api.app.uploads import ingest

#: Largest JSON body of ``POST /predict`` (three short strings); ``max_request_bytes`` is sized for uploads.
MAX_JSON_BYTES = 64 * 1024
#: The text fields a one-shot ``POST /predict`` may send beside its files.
PREDICT_FIELDS = ("case_id", "model", "tta")


def media_type(request: Request) -> str:
    """The request's ``Content-Type`` without its parameters, in lower case."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def create_upload(request: Request, fields: tuple[str, ...] = ()) -> tuple[dict, dict[str, str]]:
    """Stream a multipart body into a new upload's folder, validate and store it; returns the record and the
    form's text fields. Nothing is kept when the files are rejected or the client disconnects."""
    settings, storage = request.app.state.settings, request.app.state.storage
    if media_type(request) != "multipart/form-data":
        raise HTTPException(422, "send the files as multipart/form-data in the field 'files'")
    full = ServiceBusy("the server's upload storage is full; retry when older uploads have expired",
                       max(1, int(settings.cleanup_interval_seconds)))
    budget = settings.max_disk_bytes - await anyio.to_thread.run_sync(storage.usage_bytes)
    if budget <= 0 or int(request.headers.get("content-length") or 0) > budget:
        raise full
    upload_id, folder = storage.create_upload()
    try:
        form = await spool_form(request, folder / "spool", max_files=settings.max_members_per_case,
                                fields=fields, budget=budget)
        cases = await anyio.to_thread.run_sync(trimmed(ingest_spooled), form, folder, ingest, settings,
                                               limiter=request.app.state.file_work_limiter)
        return storage.commit_upload(upload_id, cases, max_bytes=settings.max_disk_bytes), form.fields
    except (DiskBudgetExceeded, StorageFull):  # streaming in, or unpacked (a zip's contents count too)
        storage.discard(upload_id)
        raise full from None
    except ClientDisconnect:
        storage.discard(upload_id)
        raise HTTPException(400, "the client disconnected before the body was complete") from None
    except BaseException:
        storage.discard(upload_id)
        raise


async def json_body(request: Request) -> bytes:
    """The request body, refused with 413 beyond :data:`MAX_JSON_BYTES` (read no further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise HTTPException(413, f"JSON body exceeds the limit of {MAX_JSON_BYTES} bytes")
    return bytes(body)


def form_bool(value: str | None, name: str) -> bool:
    """A form field's text as a boolean (:func:`~sspp_unet_api.app.config.text_bool`); absent or empty is false."""
    if (parsed := text_bool(value or "false")) is None:
        raise BratsError(f"form field {name!r} must be true or false, got {value[:40]!r}")
    return parsed


async def predict_request(request: Request) -> tuple[PredictRequest, bool]:
    """The request as a :class:`PredictRequest`, and whether it is a one-shot multipart request, whose files
    are stored as a new upload first."""
    content_type = media_type(request)
    if content_type == "application/json":
        try:
            return PredictRequest.model_validate_json(await json_body(request)), False
        except ValidationError as exc:
            if any(error["type"] == "json_invalid" for error in exc.errors()):
                raise HTTPException(400, "the body is not valid JSON") from None
            raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
    if content_type == "multipart/form-data":
        record, fields = await create_upload(request, fields=PREDICT_FIELDS)
        try:
            body = PredictRequest(upload_id=record["upload_id"], case_id=fields.get("case_id") or None,
                                  model=fields.get("model") or None, tta=form_bool(fields.get("tta"), "tta"))
        except ValidationError as exc:
            request.app.state.storage.discard(record["upload_id"])  # the client never learnt this upload's id
            raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
        except BratsError:
            request.app.state.storage.discard(record["upload_id"])
            raise
        return body, True
    raise HTTPException(415, "send JSON {\"upload_id\": ..., \"case_id\": ..., \"model\": ..., \"tta\": ...} or "
                             "multipart 'files' of one case")

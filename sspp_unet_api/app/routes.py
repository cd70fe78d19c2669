"""The endpoints. Every one except ``GET /`` requires ``X-API-Key`` when ``BRATS_API_KEY`` is set (checked by
:class:`~sspp_unet_api.app.guards.RequestGuard`).

Handlers that only look up, send or delete stored files are plain ``def`` (FastAPI runs them in its
threadpool: finding a prediction scans the uploads); upload validation, overlays and predictions run in
worker threads. On the event loop the disk sees only the small JSON records and the removal of rejected work.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, HTTPException, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from brats_core import __version__
from brats_core.errors import BratsError
from sspp_unet_api.app.config import Settings
from sspp_unet_api.app.inference import InferenceService, ServiceBusy, predict_case
from sspp_unet_api.app.memory import trimmed
from sspp_unet_api.app.overlay import render_overlay
from sspp_unet_api.app.schemas import (
    CaseInfo,
    ErrorResponse,
    Health,
    PredictionResponse,
    PredictionUrls,
    PredictRequest,
    UploadResponse,
)
from sspp_unet_api.app.spool import DiskBudgetExceeded, ingest_spooled, spool_form
from sspp_unet_api.app.storage import SEGMENTATION, NotFoundError, Storage, StorageFull
from sspp_unet_api.app.uploads import ingest

#: Concurrent upload validations (each loads its cases fully) and overlay renderings, in worker threads.
FILE_WORK_LIMIT = 4
#: Largest JSON body of ``POST /predict`` (three short strings); ``max_request_bytes`` is sized for uploads.
MAX_JSON_BYTES = 64 * 1024
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="required when the server sets BRATS_API_KEY"
)


def _error(description: str) -> dict:
    return {"model": ErrorResponse, "description": description}


public = APIRouter()
#: The key itself is checked by :class:`~sspp_unet_api.app.guards.RequestGuard` before the body is read; the
#: dependency only declares the ``X-API-Key`` scheme in the OpenAPI description (the docs' Authorize button).
router = APIRouter(dependencies=[Security(_api_key_header)], responses={401: _error("missing or wrong API key")})


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _storage(request: Request) -> Storage:
    return request.app.state.storage


def _service(request: Request) -> InferenceService:
    return request.app.state.service


def _limiter(request: Request) -> anyio.CapacityLimiter:
    return request.app.state.file_work_limiter


def _media_type(request: Request) -> str:
    """The request's ``Content-Type`` without its parameters, in lower case."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


@public.head("/", include_in_schema=False)
async def health_head() -> Response:
    """For load balancers' health checks: 200 with no body."""
    return Response(status_code=200, media_type="application/json")


@public.get("/", response_model=Health, summary="Health and the served model")
async def health(request: Request) -> Health:
    settings, service = _settings(request), _service(request)
    return Health(
        status="ok", model=settings.model, models=list(settings.allowed_models),
        checkpoint=service.checkpoint_name(), device=service.device, version=__version__,
        inference_slots=settings.max_concurrent_inferences, active_inferences=service.active,
    )


def _upload_response(record: dict) -> UploadResponse:
    cases = [
        CaseInfo(case_id=c["case_id"], modalities=list(c["images"]), shape=c["shape"], spacing_mm=c["spacing"],
                 has_segmentation=c["seg"] is not None)
        for c in record["cases"]
    ]
    return UploadResponse(upload_id=record["upload_id"], cases=cases, expires_at=_utc(record["expires_at"]))


async def _create_upload(request: Request, fields: tuple[str, ...] = ()) -> tuple[dict, dict[str, str]]:
    """Stream a multipart body into a new upload's folder, validate and store it; returns the record and the
    form's text fields. Nothing is kept when the files are rejected or the client disconnects."""
    settings, storage = _settings(request), _storage(request)
    if _media_type(request) != "multipart/form-data":
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
                                               limiter=_limiter(request))
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


_FILES_SCHEMA = {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "one .zip (one or more cases) or the 4-5 .nii/.nii.gz files of a case"}
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"], "properties": {"files": _FILES_SCHEMA}}}}}}


@router.post(
    "/upload", status_code=201, response_model=UploadResponse, summary="Upload one .zip or the NIfTI files of a case",
    responses={413: _error("request too large"), 422: _error("invalid files"), 503: _error("storage full")},
    openapi_extra=_UPLOAD_BODY,
)
async def upload(request: Request) -> UploadResponse:
    record, _ = await _create_upload(request)
    return _upload_response(record)


@router.get("/uploads/{upload_id}", response_model=UploadResponse, summary="The cases of an upload",
            responses={404: _error("unknown or expired upload")})
def get_upload(request: Request, upload_id: str) -> UploadResponse:
    return _upload_response(_storage(request).upload(upload_id))


@router.delete("/uploads/{upload_id}", status_code=204, summary="Delete an upload and its predictions",
               responses={404: _error("unknown or expired upload")})
def delete_upload(request: Request, upload_id: str) -> Response:
    _storage(request).delete_upload(upload_id)
    return Response(status_code=204)


_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {**_FILES_SCHEMA, "description": "one-shot: the NIfTI files (or a .zip) of one case"},
                        "case_id": {"type": "string"},
                        "model": {"type": "string"},
                        "tta": {"type": "boolean", "default": False},
                    },
                }
            },
        },
    }
}


async def _json_body(request: Request) -> bytes:
    """The request body, refused with 413 beyond :data:`MAX_JSON_BYTES` (read no further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise HTTPException(413, f"JSON body exceeds the limit of {MAX_JSON_BYTES} bytes")
    return bytes(body)


def _form_bool(value: str | None, name: str) -> bool:
    """A form field's text as a boolean: true/false, 1/0 (any letter case); absent or empty is false."""
    text = (value or "false").strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise BratsError(f"form field {name!r} must be true or false, got {value[:40]!r}")
    return text in ("true", "1")


async def _predict_request(request: Request) -> tuple[PredictRequest, bool]:
    """The request as a :class:`PredictRequest`, and whether it is a one-shot multipart request, whose files
    are stored as a new upload first."""
    content_type = _media_type(request)
    if content_type == "application/json":
        try:
            return PredictRequest.model_validate_json(await _json_body(request)), False
        except ValidationError as exc:
            if any(error["type"] == "json_invalid" for error in exc.errors()):
                raise HTTPException(400, "the body is not valid JSON") from None
            raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
    if content_type == "multipart/form-data":
        record, fields = await _create_upload(request, fields=("case_id", "model", "tta"))
        try:
            body = PredictRequest(upload_id=record["upload_id"], case_id=fields.get("case_id") or None,
                                  model=fields.get("model") or None, tta=_form_bool(fields.get("tta"), "tta"))
        except ValidationError as exc:
            _storage(request).discard(record["upload_id"])  # the client never learnt this upload's id
            raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
        except BratsError:
            _storage(request).discard(record["upload_id"])
            raise
        return body, True
    raise HTTPException(415, "send JSON {\"upload_id\": ..., \"case_id\": ..., \"model\": ..., \"tta\": ...} or "
                             "multipart 'files' of one case")


def _prediction_response(request: Request, record: dict, expires_at: float) -> PredictionResponse:
    prediction_id = record["prediction_id"]
    urls = PredictionUrls(
        segmentation=str(request.url_for("prediction_segmentation", prediction_id=prediction_id)),
        overlay=str(request.url_for("prediction_overlay", prediction_id=prediction_id)),
    )
    fields = {k: v for k, v in record.items() if k in PredictionResponse.model_fields}
    return PredictionResponse(**fields, urls=urls, expires_at=_utc(expires_at))


@router.post(
    "/predict", response_model=PredictionResponse, openapi_extra=_PREDICT_BODY,
    summary="Segment one case (JSON for an upload, or multipart files for one-shot use)",
    responses={404: _error("unknown upload or case"), 413: _error("request too large"),
               415: _error("unsupported content type"), 422: _error("invalid request or files"),
               503: _error("every inference slot busy; see Retry-After")},
)
async def predict(request: Request) -> PredictionResponse:
    body, one_shot = await _predict_request(request)
    try:
        return await _predict(request, body)
    except BaseException:
        if one_shot:  # the client never learnt this upload's id
            _storage(request).discard(body.upload_id)
        raise


async def _predict(request: Request, body: PredictRequest) -> PredictionResponse:
    settings, storage, service = _settings(request), _storage(request), _service(request)
    model = body.model or settings.model
    segmenter = service.model(model, body.tta)
    pending = storage.begin_prediction(body.upload_id, body.case_id)
    try:
        result = await service.run(predict_case, segmenter, pending.files, pending.segmentation)
    except BaseException:
        storage.abandon_prediction(pending)
        raise
    record, expires_at = storage.commit_prediction(
        pending, {"model": model, "tta": body.tta, "device": service.device, **result})
    return _prediction_response(request, record, expires_at)


@router.get("/predictions/{prediction_id}", response_model=PredictionResponse, summary="A prediction's results",
            responses={404: _error("unknown or expired prediction")})
def get_prediction(request: Request, prediction_id: str) -> PredictionResponse:
    storage = _storage(request)
    record, _ = storage.prediction(prediction_id)
    return _prediction_response(request, record, storage.upload(record["upload_id"])["expires_at"])


@router.get(
    "/predictions/{prediction_id}/segmentation", name="prediction_segmentation", response_class=FileResponse,
    summary="The label map (.nii.gz, labels 0/1/2/4) in the input's geometry",
    responses={200: {"content": {"application/gzip": {}}}, 404: _error("unknown or expired prediction")},
)
def segmentation(request: Request, prediction_id: str) -> FileResponse:
    record, folder = _storage(request).prediction(prediction_id)
    return FileResponse(folder / SEGMENTATION, media_type="application/gzip",
                        filename=f"{record['case_id']}_{record['model']}_seg.nii.gz")


@router.get(
    "/predictions/{prediction_id}/overlay", name="prediction_overlay", response_class=Response,
    summary="PNG of one slice with the labels on the FLAIR (default: the slice with the most tumour)",
    responses={200: {"content": {"image/png": {}}}, 404: _error("unknown or expired prediction"),
               422: _error("slice index out of range")},
)
async def overlay(
    request: Request,
    prediction_id: str,
    axis: Literal["axial", "coronal", "sagittal"] = "axial",
    index: int | None = Query(default=None, ge=0, description="slice index; default: the most tumour"),
) -> Response:
    storage = _storage(request)

    def render() -> bytes:
        record, folder = storage.prediction(prediction_id)
        image = storage.upload_dir(record["upload_id"]) / record["image"]
        return render_overlay(image, folder / SEGMENTATION, axis, index)

    png = await anyio.to_thread.run_sync(trimmed(render), limiter=_limiter(request))
    return Response(png, media_type="image/png")


@router.get(
    "/download_sample", response_class=FileResponse, summary="The bundled sample case (.zip, BraTS data-use terms)",
    responses={200: {"content": {"application/zip": {}}}, 404: _error("no sample bundled")},
)
async def download_sample(request: Request) -> FileResponse:
    path = _settings(request).sample_zip
    if not path.is_file():
        raise NotFoundError("no sample case is bundled with this server")
    return FileResponse(path, media_type="application/zip", filename="sample_case.zip")

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
from fastapi import APIRouter, Query, Request, Response, Security
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader

from brats_core import __version__
from sspp_unet_api.app.bodies import create_upload, predict_request
from sspp_unet_api.app.config import Settings
from sspp_unet_api.app.inference import InferenceService, predict_case
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
from sspp_unet_api.app.storage import SEGMENTATION, NotFoundError, Storage

#: Concurrent upload validations (each loads its cases fully) and overlay renderings, in worker threads.
FILE_WORK_LIMIT = 4
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
    record, _ = await create_upload(request)
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
    body, one_shot = await predict_request(request)
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

"""Request and response models of the API (they are the OpenAPI schema shown at ``/docs``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class ErrorResponse(BaseModel):
    """Every error: what is wrong, in words (FastAPI's request validation errors give a list instead)."""

    detail: str = Field(examples=["case 'x' in x: missing modality flair (found t1=..., t1ce=..., t2=...)"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    model: str = Field(description="model used when a request names none", examples=["sspp"])
    models: list[str] = Field(description="models a request may pick", examples=[["sspp"]])
    checkpoint: str | None = Field(description="file name of the default model's checkpoint", examples=["sspp.pt"])
    device: str = Field(examples=["cpu"])
    version: str = Field(examples=["0.1.0"])
    inference_slots: int = Field(description="predictions that may run at once")
    active_inferences: int = Field(description="predictions running now")


class CaseInfo(BaseModel):
    case_id: str = Field(examples=["Brats18_TCIA02_370_1"])
    modalities: list[str] = Field(examples=[["t1", "t1ce", "t2", "flair"]])
    shape: list[int] = Field(description="voxels along the three axes", examples=[[240, 240, 155]])
    spacing_mm: list[float] = Field(examples=[[1.0, 1.0, 1.0]])
    has_segmentation: bool = Field(description="a ground-truth seg was uploaded: predictions report Dice and HD95")


class UploadResponse(BaseModel):
    upload_id: str = Field(description="random id (uuid4); keep it private, it is the only key to the upload")
    cases: list[CaseInfo]
    expires_at: datetime = Field(description="UTC time after which the upload and its predictions are deleted")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(description="id returned by POST /upload")
    case_id: str | None = Field(default=None, description="case to segment; optional when the upload has one case")
    model: str | None = Field(default=None, description="one of the served models (GET /); default: the service's")
    tta: StrictBool = Field(default=False, description="test-time flips (deep models): the mean of 3 passes, about "
                            "2.5x the model time for a slightly better CV (README, Results); JSON true or false")


class RegionMetrics(BaseModel):
    dice: float
    hd95_mm: float = Field(description="95th percentile Hausdorff distance (373.13 when exactly one mask is empty)")
    sensitivity: float
    specificity: float


class PredictionUrls(BaseModel):
    segmentation: str = Field(description="the label map (.nii.gz, labels 0/1/2/4) in the input's geometry")
    overlay: str = Field(description="PNG overlay of one slice; add ?axis=axial|coronal|sagittal&index=k")


class PredictionResponse(BaseModel):
    prediction_id: str
    upload_id: str
    case_id: str
    model: str
    tta: bool = Field(default=False, description="the prediction used test-time flips")
    device: str
    shape: list[int]
    spacing_mm: list[float]
    volumes_ml: dict[str, float] = Field(description="WT, TC and ET volumes in millilitres", examples=[
        {"WT": 61.2, "TC": 19.8, "ET": 12.1}])
    metrics: dict[str, RegionMetrics] | None = Field(
        description="Dice and HD95 per region against the uploaded seg; null without a seg")
    runtime_seconds: float = Field(description="time of the model's prediction")
    total_seconds: float = Field(description="loading, prediction, saving and scoring, without queueing")
    urls: PredictionUrls
    expires_at: datetime

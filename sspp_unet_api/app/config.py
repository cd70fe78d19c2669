"""Service settings: one typed, frozen dataclass read from ``BRATS_*`` environment variables."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from brats_app.registry import default_checkpoint
from brats_core.errors import BratsError

MIB = 1024 * 1024
SAMPLE_ZIP = Path(__file__).resolve().parent.parent / "sample" / "sample_case.zip"


@dataclass(frozen=True)
class Settings:
    """Everything the service can be configured with; see :meth:`from_env` for the variable names."""

    host: str = "0.0.0.0"
    port: int = 8000
    #: Model served when a request names none; ``allowed_models`` are the others a request may pick.
    model: str = "sspp"
    allowed_models: tuple[str, ...] = ("sspp",)
    #: Explicit checkpoints by model name; others use the shipped one (see :meth:`checkpoint`).
    checkpoints: Mapping[str, Path] = field(default_factory=dict)
    #: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``.
    device: str = "auto"
    data_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "brats_api")
    ttl_seconds: float = 3600.0
    cleanup_interval_seconds: float = 60.0
    #: Largest request body (Content-Length and streamed bytes alike).
    max_request_bytes: int = 1024 * MIB
    max_zip_members: int = 200
    max_uncompressed_bytes: int = 4096 * MIB
    max_compression_ratio: float = 100.0
    #: Files one case may consist of (four modalities + segmentation).
    max_members_per_case: int = 5
    max_cases_per_upload: int = 20
    #: Total size of ``data_dir`` above which new uploads are refused with 503 until the TTL frees space.
    max_disk_bytes: int = 20 * 1024 * MIB
    max_concurrent_inferences: int = 1
    #: Seconds a request waits for a free inference slot before 503 + Retry-After.
    queue_timeout_seconds: float = 30.0
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    sample_zip: Path = SAMPLE_ZIP
    log_level: str = "info"
    #: Limits against slow or greedy clients (see ``guards.py`` and ``server.py``).
    header_timeout_seconds: float = 10.0
    body_idle_timeout_seconds: float = 30.0
    body_timeout_seconds: float = 600.0
    keep_alive_seconds: int = 5
    max_connections: int = 100
    max_header_bytes: int = 16 * 1024
    #: Voxels of one volume and of all the files of one case, checked from the NIfTI headers.
    max_voxels_per_volume: int = 256**3
    max_voxels_per_case: int = 5 * 256**3
    workers: int = 1
    #: Delete every upload when the server shuts down cleanly (``make demo``).
    purge_on_exit: bool = False
    #: Cap malloc arenas and trim them after each prediction, upload and overlay (``memory.py``).
    release_memory: bool = True

    def __post_init__(self) -> None:
        if self.model not in self.allowed_models:
            object.__setattr__(self, "allowed_models", (self.model, *self.allowed_models))
        if self.device not in {"auto", "cpu", "cuda"}:
            raise BratsError(f"BRATS_DEVICE must be auto, cpu or cuda, got {self.device!r}")
        positive = ("ttl_seconds", "cleanup_interval_seconds", "max_request_bytes", "max_zip_members",
                    "max_uncompressed_bytes", "max_compression_ratio", "max_members_per_case",
                    "max_cases_per_upload", "max_disk_bytes", "max_concurrent_inferences",
                    "header_timeout_seconds", "body_idle_timeout_seconds", "body_timeout_seconds",
                    "keep_alive_seconds", "max_connections", "max_header_bytes", "max_voxels_per_volume",
                    "max_voxels_per_case", "workers")
        for name in positive:
            if getattr(self, name) <= 0:
                raise BratsError(f"setting {name} must be positive, got {getattr(self, name)}")
        if self.queue_timeout_seconds < 0:
            raise BratsError(f"setting queue_timeout_seconds must not be negative, got {self.queue_timeout_seconds}")
        if not 0 < self.port < 65536:
            raise BratsError(f"BRATS_PORT must be a TCP port (1-65535), got {self.port}")

    def checkpoint(self, model: str) -> Path:
        """Checkpoint of ``model``: the configured one, else the registry's shipped one."""
        if model in self.checkpoints:
            return Path(self.checkpoints[model])
        return default_checkpoint(model)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``BRATS_<FIELD>`` variables (upper case field names), e.g. ``BRATS_PORT=9000``.

        Lists are comma separated (``BRATS_ALLOWED_MODELS=sspp,unet``, ``BRATS_CORS_ORIGINS=https://a,https://b``);
        ``BRATS_CHECKPOINT`` is the checkpoint of the default model and ``BRATS_CHECKPOINT_<MODEL>`` that of any
        model. An empty value means the default.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for item in fields(cls):
            raw = env.get(f"BRATS_{item.name.upper()}", "").strip()
            if not raw or item.name == "checkpoints":
                continue
            values[item.name] = _parse(item.name, raw, str(item.type))
        model = str(values.get("model", cls.model))
        checkpoints = {
            key[len("BRATS_CHECKPOINT_"):].lower(): Path(value)
            for key, value in env.items()
            if key.startswith("BRATS_CHECKPOINT_") and value.strip()
        }
        if env.get("BRATS_CHECKPOINT", "").strip():
            checkpoints[model] = Path(env["BRATS_CHECKPOINT"].strip())
        return cls(checkpoints=checkpoints, **values)  # type: ignore[arg-type]


def text_bool(raw: str) -> bool | None:
    """A boolean written as text (1/0, true/false, yes/no, any letter case), or None when it is not one; the
    environment's settings and the API's form fields read booleans alike."""
    return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(raw.strip().lower())


def _parse(name: str, raw: str, annotation: str) -> object:
    """Convert one environment value to the field's type, naming the variable when it cannot."""
    variable = f"BRATS_{name.upper()}"
    try:
        if annotation == "int":
            return int(raw)
        if annotation == "float":
            return float(raw)
    except ValueError:
        raise BratsError(f"{variable}={raw!r} is not a number") from None
    if annotation == "bool":
        if (value := text_bool(raw)) is None:
            raise BratsError(f"{variable}={raw!r} is not a boolean (1/0, true/false, yes/no)")
        return value
    if annotation == "Path":
        return Path(raw)
    if annotation.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw

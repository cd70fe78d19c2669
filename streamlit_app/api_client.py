"""A small client of the segmentation API (``sspp_unet_api``): requests, explicit timeouts, JSON or raw bytes.

Every failure (API down, timeout, HTTP error, malformed answer) raises :class:`ApiError` with a message fit
to show a user. Answers are parsed as JSON or returned as bytes, never unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import requests

DEFAULT_API_URL = "http://127.0.0.1:8000"
#: Environment variables: the default API URL and the read timeout (seconds) of the long calls.
API_URL_ENV = "BRATS_API_URL"
TIMEOUT_ENV = "BRATS_API_TIMEOUT"
#: Largest download accepted (a BraTS segmentation is about 1 MB, the bundled sample zip about 7 MB).
MAX_DOWNLOAD_BYTES = 512 * 1024**2
_CHUNK = 1024**2


class ApiError(Exception):
    """A failed API call: ``str(error)`` is a readable message, ``status`` the HTTP status if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait: to connect, for the health check, and for uploads, predictions and downloads."""

    connect: float = 5.0
    health: float = 5.0
    long: float = 600.0

    @classmethod
    def from_env(cls) -> Timeouts:
        """Defaults; ``BRATS_API_TIMEOUT`` sets the long read timeout and caps the other two."""
        value = os.environ.get(TIMEOUT_ENV)
        if not value:
            return cls()
        try:
            seconds = float(value)
        except ValueError:
            return cls()
        if seconds <= 0:
            return cls()
        return cls(connect=min(cls.connect, seconds), health=min(cls.health, seconds), long=seconds)


def default_api_url() -> str:
    """``BRATS_API_URL`` if set, else :data:`DEFAULT_API_URL`."""
    return os.environ.get(API_URL_ENV, "").strip() or DEFAULT_API_URL


def _detail(response: requests.Response) -> str:
    """The ``detail`` of an error answer in plain words (FastAPI validation lists become one line)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{where}: {item.get('msg', item)}" if where else str(item.get("msg", item)))
            else:
                parts.append(str(item))
        detail = "; ".join(parts)
    if not detail:
        detail = response.reason or "no details given"
    return str(detail)[:500]


class ApiClient:
    """Client of one API base URL, optionally sending an ``X-API-Key`` header."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.strip().rstrip("/")
        self.timeouts = timeouts or Timeouts.from_env()
        self._session = session or requests.Session()
        self._headers = {"X-API-Key": api_key} if api_key else {}

    def _request(self, method: str, path: str, read_timeout: float, **kwargs) -> requests.Response:
        url = f"{self.base_url}{path}"
        if not self.base_url.startswith(("http://", "https://")):
            raise ApiError(f"The API URL {self.base_url!r} must start with http:// or https://")
        try:
            response = self._session.request(
                method, url, headers=self._headers, timeout=(self.timeouts.connect, read_timeout), **kwargs
            )
        except requests.ConnectTimeout:
            raise ApiError(
                f"Cannot reach the API at {self.base_url} (connection timed out). Is it running?"
            ) from None
        except requests.Timeout:
            raise ApiError(f"The API at {self.base_url} did not answer within {read_timeout:g} s.") from None
        except requests.ConnectionError:
            raise ApiError(f"Cannot reach the API at {self.base_url}. Is it running?") from None
        except requests.RequestException as exc:
            raise ApiError(f"Request to {url} failed: {exc}") from None
        if response.status_code >= 400:
            detail = _detail(response)
            response.close()
            if response.status_code in (401, 403):
                message = (
                    f"The API refused access (HTTP {response.status_code}): {detail}. Check the API key."
                )
            elif response.status_code >= 500:
                message = f"The API failed (HTTP {response.status_code}): {detail}"
            else:
                message = f"{detail} (HTTP {response.status_code})"
            raise ApiError(message, response.status_code)
        return response

    def _json(self, method: str, path: str, read_timeout: float, **kwargs) -> dict:
        response = self._request(method, path, read_timeout, **kwargs)
        try:
            data = response.json()
        except ValueError:
            raise ApiError(f"The API answered {path} with something that is not JSON.") from None
        if not isinstance(data, dict):
            raise ApiError(f"The API answered {path} with JSON that is not an object.")
        return data

    def _bytes(self, path: str) -> bytes:
        response = self._request("GET", path, self.timeouts.long, stream=True)
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(_CHUNK):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise ApiError(f"The API sent more than {MAX_DOWNLOAD_BYTES // 1024**2} MB for {path}.")
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise ApiError(f"Download of {path} was interrupted: {exc}") from None
        finally:
            response.close()
        return b"".join(chunks)

    def health(self) -> dict:
        """``GET /``: status, model, checkpoint, device and version of the service."""
        return self._json("GET", "/", self.timeouts.health)

    def upload(self, files: Sequence[tuple[str, bytes]]) -> dict:
        """``POST /upload`` of (name, bytes) pairs: one .zip or the NIfTI files of a case."""
        parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
        return self._json("POST", "/upload", self.timeouts.long, files=parts)

    def upload_info(self, upload_id: str) -> dict:
        """``GET /uploads/{upload_id}``: the cases of a live upload (HTTP 404 once it expired)."""
        return self._json("GET", f"/uploads/{quote(upload_id, safe='')}", self.timeouts.health)

    def predict(self, upload_id: str, case_id: str | None = None, model: str | None = None,
                tta: bool = False) -> dict:
        """``POST /predict``: segment one case of an upload (``tta``: with test-time flips); volumes, metrics
        (with a true mask), URLs."""
        body: dict[str, str | bool] = {"upload_id": upload_id}
        if case_id is not None:
            body["case_id"] = case_id
        if model is not None:
            body["model"] = model
        if tta:
            body["tta"] = True
        return self._json("POST", "/predict", self.timeouts.long, json=body)

    def segmentation(self, prediction_id: str) -> bytes:
        """The predicted label map as the bytes of a ``.nii.gz`` file."""
        return self._bytes(f"/predictions/{quote(prediction_id, safe='')}/segmentation")

    def download_sample(self) -> bytes:
        """The bundled sample case as the bytes of a ``.zip`` file."""
        return self._bytes("/download_sample")

    def delete_upload(self, upload_id: str) -> None:
        """``DELETE /uploads/{upload_id}``: forget the uploaded files on the server."""
        self._request("DELETE", f"/uploads/{quote(upload_id, safe='')}", self.timeouts.health).close()

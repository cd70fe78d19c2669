"""Pure ASGI middleware that refuses a request from its headers, before any byte of its body is read.

:class:`RequestGuard` answers, in this order and without reading the body:

- 403 to a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` is neither the server's own (the
  ``Host`` it was sent to) nor one of ``BRATS_CORS_ORIGINS``: a page on another site cannot make a visitor's
  browser upload to or run predictions on a server the visitor can reach (e.g. one on ``localhost``);
- 401 when ``BRATS_API_KEY`` is set and ``X-API-Key`` is missing or wrong (``GET``/``HEAD /`` and the docs stay
  public). This is the only check of the key: the routes merely declare the scheme for the OpenAPI description.

:class:`BodyTimeout` bounds how long the body may take: ``idle`` seconds at most between two chunks and ``total``
seconds for all of it; past either the request gets 408 and its connection is closed (uvicorn has no body
timeout; see ``server.py`` for the header timeout).
"""

from __future__ import annotations

import hmac
import time
from urllib.parse import urlsplit

import anyio
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sspp_unet_api.app.middleware import send_json

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Paths anyone may read without the API key: health and the API's own documentation.
PUBLIC_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES = ("/docs-assets/",)


def is_public(method: str, path: str) -> bool:
    return method in {"GET", "HEAD"} and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES))


def _netloc(origin: str) -> str:
    try:
        return urlsplit(origin).netloc.lower()
    except ValueError:
        return ""


class RequestGuard:
    """403 for foreign origins and 401 for a missing key, decided on the headers alone."""

    def __init__(self, app: ASGIApp, api_key: str | None, cors_origins: tuple[str, ...]) -> None:
        self.app, self.api_key = app, api_key.encode() if api_key else None
        self.origins = {o.rstrip("/").lower() for o in cors_origins}

    def _foreign_origin(self, headers: dict[bytes, bytes]) -> str | None:
        origin = headers.get(b"origin")
        if origin is None:
            return None  # not sent by a browser on behalf of another page
        text = origin.decode("latin-1").strip()
        host = headers.get(b"host", b"").decode("latin-1").strip().lower()
        if text.rstrip("/").lower() in self.origins or (host and _netloc(text) == host):
            return None
        return text[:100]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        method = scope["method"]
        if method in STATE_CHANGING and (origin := self._foreign_origin(headers)) is not None:
            await send_json(send, 403, f"cross-origin {method} from {origin!r} refused: the server accepts such "
                                       "requests only from its own origin and BRATS_CORS_ORIGINS")
            return
        if self.api_key and not is_public(method, scope["path"]):
            key = headers.get(b"x-api-key", b"")
            if not hmac.compare_digest(key, self.api_key):
                await send_json(send, 401, "missing or wrong X-API-Key header")
                return
        await self.app(scope, receive, send)


class BodyTimedOut(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(408, detail, headers={"Connection": "close"})


class BodyTimeout:
    """408 when the body stalls for ``idle`` seconds or takes longer than ``total`` seconds in all."""

    def __init__(self, app: ASGIApp, idle: float, total: float) -> None:
        self.app, self.idle, self.total = app, idle, total

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.total
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:  # after the body, receive() only waits for a disconnect: no limit
                return await receive()
            remaining = deadline - time.monotonic()
            idle = self.idle < remaining
            with anyio.move_on_after(max(min(self.idle, remaining), 0.0)) as waiting:
                message = await receive()
            if waiting.cancelled_caught:
                detail = (f"no body data for {self.idle:g} s (BRATS_BODY_IDLE_TIMEOUT_SECONDS)" if idle
                          else f"the body took longer than {self.total:g} s (BRATS_BODY_TIMEOUT_SECONDS)")
                raise BodyTimedOut(f"request timed out: {detail}")
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)

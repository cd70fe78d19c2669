"""Pure ASGI middleware: a streamed request-size limit, security headers and a readable start-up failure message."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes (BRATS_MAX_REQUEST_BYTES)")


class BodySizeLimit:
    """413 for a request whose Content-Length or streamed body exceeds ``max_bytes``.

    A declared length over the limit is refused before any byte is read; otherwise the bytes are counted as
    they arrive, so a chunked or lying client cannot make the server read (or spool to disk) more than the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                await send_json(send, 400, "invalid Content-Length header")
                return
            if too_large:
                await send_json(send, 413, BodyTooLarge(self.max_bytes).detail)
                return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await send_json(send, 413, exc.detail)


#: Headers of every response; HTML pages (the docs) get :data:`HTML_CSP`, everything else :data:`DATA_CSP`.
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                  (b"x-frame-options", b"DENY")]
HTML_CSP = (b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            b"img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
            b"base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
DATA_CSP = b"default-src 'none'; frame-ancestors 'none'"
#: Responses that may be cached: the static assets of the docs. Everything else (results) is ``no-store``.
CACHEABLE_PREFIX = "/docs-assets/"


class SecurityHeaders:
    """``nosniff``, ``Referrer-Policy``, ``X-Frame-Options``, a CSP with ``frame-ancestors 'none'`` and
    ``Cache-Control: no-store`` (except on the docs' static assets) on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope["path"].startswith(CACHEABLE_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                           or cacheable]
                html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
                headers += [*COMMON_HEADERS, (b"content-security-policy", HTML_CSP if html else DATA_CSP)]
                if not cacheable:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class StartupErrorMessage:
    """Replace the traceback Starlette reports for a failed start-up by ``app.state.startup_error``.

    Uvicorn logs that message and exits, so a missing checkpoint reads as one clear line, not a traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state

        async def clean_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and getattr(state, "startup_error", None):
                message = {**message, "message": state.startup_error}
            await send(message)

        await self.app(scope, receive, clean_send)


async def send_json(send: Send, status: int, detail: str) -> None:
    """A JSON ``{"detail": ...}`` response that closes the connection (the body may be unread)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

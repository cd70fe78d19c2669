"""The FastAPI application: ``create_app`` factory, module-level ``app`` for uvicorn, and ``main`` to serve it.

Run with ``python sspp_unet_api/app/main.py`` or ``brats serve`` (both apply the connection limits of the settings),
or ``uvicorn sspp_unet_api.app.main:app`` with its own options.
Importing this module creates nothing; creating the app reads the settings only; models load in the lifespan.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from brats_core import __version__
from brats_core.errors import BratsError
from brats_core.evaluation import Segmenter
from sspp_unet_api.app.cleanup import purge_at_shutdown, sweep_at_startup, sweep_forever
from sspp_unet_api.app.config import Settings
from sspp_unet_api.app.docs import install_docs
from sspp_unet_api.app.guards import BodyTimeout, RequestGuard
from sspp_unet_api.app.inference import InferenceService, ServiceBusy
from sspp_unet_api.app.memory import configure_allocator
from sspp_unet_api.app.middleware import BodySizeLimit, SecurityHeaders, StartupErrorMessage
from sspp_unet_api.app.routes import FILE_WORK_LIMIT, public, router
from sspp_unet_api.app.storage import NotFoundError, Storage

#: A child of uvicorn's logger, so that its messages appear with uvicorn's, at its level.
logger = logging.getLogger("uvicorn.error.brats_api")

DESCRIPTION = """Brain tumour segmentation (BraTS labels 0/1/2/4) of multimodal MRI with U-Net + SSPP.

Upload a case (`POST /upload`), segment it (`POST /predict`), download the label map as NIfTI or look at a PNG
overlay. Uploads are private to their random id and deleted after a TTL. Research use only, not a medical device.
"""


def _capped(value: object, limit: int = 100) -> object:
    """A request value echoed in a validation error, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else None
    if text is None:
        return value if len(repr(value)) <= limit else f"{type(value).__name__} ({len(repr(value))} characters)"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BratsError)
    async def bad_input(request: Request, exc: BratsError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ServiceBusy)
    async def busy(request: Request, exc: ServiceBusy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{**e, "input": _capped(e["input"])} if "input" in e else e for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, status_code=500)


def create_app(settings: Settings | None = None, segmenter: Segmenter | None = None) -> FastAPI:
    """The application. ``segmenter`` (tests, embedding) replaces loading the default model's checkpoint."""
    settings = settings or Settings.from_env()
    service = InferenceService(settings, segmenter)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            configure_allocator(settings.release_memory)
            app.state.storage = Storage(settings.data_dir, settings.ttl_seconds)
            await sweep_at_startup(app.state.storage)
            await service.start()
        except (BratsError, OSError) as exc:
            app.state.startup_error = f"cannot start the BraTS segmentation API: {exc}"
            raise
        app.state.file_work_limiter = anyio.CapacityLimiter(FILE_WORK_LIMIT)
        sweeper = asyncio.create_task(sweep_forever(app.state.storage, settings.cleanup_interval_seconds))
        logger.info("serving %s on %s", ", ".join(settings.allowed_models), service.device)
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if settings.purge_on_exit:
                await purge_at_shutdown(app.state.storage)

    app = FastAPI(title="BraTS U-Net + SSPP segmentation API", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.service = service
    app.state.startup_error = None
    app.include_router(public)
    app.include_router(router)
    install_docs(app)
    _install_error_handlers(app)
    # Innermost first: a request meets CORS, the headers, the origin/key guard, the size limit, the timeouts.
    app.add_middleware(BodyTimeout, idle=settings.body_idle_timeout_seconds, total=settings.body_timeout_seconds)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestGuard, api_key=settings.api_key, cors_origins=settings.cors_origins)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(StartupErrorMessage)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type"], expose_headers=["Retry-After", "Content-Disposition"],
        )
    return app


def main(argv: list[str] | None = None) -> int:
    """``brats serve [--host H] [--port P] [--workers N]``: serve the app with uvicorn (settings from ``BRATS_*``).

    Connection limits and timeouts come from the settings (:func:`~sspp_unet_api.app.server.uvicorn_options`).
    With several workers each process loads the models and has its own inference slots; all share the storage
    folder, so any worker serves any upload.
    """
    import uvicorn

    from sspp_unet_api.app.server import uvicorn_options

    parser = argparse.ArgumentParser(prog="brats serve", description="Serve the segmentation API with uvicorn.")
    parser.add_argument("--host", help="interface to bind (default BRATS_HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="TCP port (default BRATS_PORT or 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (default BRATS_WORKERS or 1)")
    parser.add_argument("--fd", type=int, help="serve on this inherited listening socket instead (tests, systemd)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = Settings.from_env()
        if args.workers is not None and args.workers < 1:
            raise BratsError(f"--workers must be at least 1, got {args.workers}")
    except BratsError as exc:
        print(f"brats serve: error: {exc}", file=sys.stderr)
        return 2
    workers = args.workers or settings.workers
    where = {"fd": args.fd} if args.fd is not None else {"host": args.host or settings.host,
                                                         "port": args.port or settings.port}
    # Several workers import the app by name, each creating it from the same BRATS_* environment.
    app = "sspp_unet_api.app.main:app" if workers > 1 else create_app(settings)
    uvicorn.run(app, workers=workers, **where, **uvicorn_options(settings))
    return 0


def __getattr__(name: str) -> FastAPI:
    """The module-level ``app`` (``uvicorn sspp_unet_api.app.main:app``), created from ``BRATS_*`` on first access.

    Invalid settings end the process with a one-line message instead of a traceback.
    """
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        application = create_app()
    except BratsError as exc:
        print(f"cannot start the BraTS segmentation API: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    globals()["app"] = application
    return application


if __name__ == "__main__":
    sys.exit(main())

"""Cleaning the storage folder: expired uploads at start-up and every interval, and, for the demo, everything
at a clean shutdown."""

from __future__ import annotations

import asyncio
import logging

import anyio.to_thread

from sspp_unet_api.app.storage import Storage, is_valid_id

logger = logging.getLogger("uvicorn.error.brats_api")
#: The environment ``make demo`` gives its API, so that the demo's uploads do not outlive it.
PURGE_ON_EXIT_ENV = {"BRATS_PURGE_ON_EXIT": "1"}


def purge(storage: Storage) -> int:
    """Delete every upload (live, expired or partial) with its predictions; returns how many."""
    folders = [f for f in storage.root.iterdir() if f.is_dir() and is_valid_id(f.name)]
    for folder in folders:
        storage.discard(folder.name)
    return len(folders)


async def _sweep(storage: Storage, note: str = "") -> None:
    removed = await anyio.to_thread.run_sync(storage.sweep)
    if removed:
        logger.info("deleted %d expired upload(s)%s", removed, note)


async def sweep_at_startup(storage: Storage) -> None:
    """Delete what expired while the server was down (or was left by a killed one) before serving."""
    await _sweep(storage, " left from before the start")


async def sweep_forever(storage: Storage, interval: float) -> None:
    """Delete expired uploads every ``interval`` seconds (a failed sweep is logged, the next one still runs)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await _sweep(storage)
        except OSError:
            logger.exception("sweeping %s failed", storage.root)


async def purge_at_shutdown(storage: Storage) -> None:
    removed = await anyio.to_thread.run_sync(purge, storage)
    logger.info("deleted %d upload(s) at shutdown (BRATS_PURGE_ON_EXIT)", removed)

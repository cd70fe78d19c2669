"""How the service is served: uvicorn's own limits from the settings, plus a header timeout uvicorn lacks.

Uvicorn bounds idle keep-alive connections (``timeout_keep_alive``), the size of the request head (h11's
``max_incomplete_event_size``) and the open connections (``limit_concurrency``: 503 beyond), but it waits
for the request headers forever: 300 connections sending an unfinished head stayed open (slowloris).
:class:`HeaderTimeoutH11Protocol` closes a connection whose request head is not complete
``BRATS_HEADER_TIMEOUT_SECONDS`` after the connection opened or the previous response ended, however slowly
bytes trickle in. Body timeouts are the ASGI middleware :class:`~sspp_unet_api.app.guards.BodyTimeout`.
"""

from __future__ import annotations

import asyncio
import functools

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from sspp_unet_api.app.config import Settings


@functools.cache
def _header_timeout() -> float:
    """From ``BRATS_HEADER_TIMEOUT_SECONDS``: uvicorn builds protocols itself, each worker from the environment."""
    return Settings.from_env().header_timeout_seconds


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head."""

    header_timeout: float | None = None
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        timeout = self.header_timeout if self.header_timeout is not None else _header_timeout()
        self._header_timer = self.loop.call_later(timeout, self._on_header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if not busy and not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            # still waiting for a (complete) request head: drop the connection without an answer
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state not in (h11.IDLE, h11.DONE) or self.cycle is not None and (
            not self.cycle.response_complete
        ):
            self._disarm()  # a request head arrived: the body timeouts take over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()


def uvicorn_options(settings: Settings) -> dict[str, object]:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` that apply the settings' connection limits."""
    return {
        "http": HeaderTimeoutH11Protocol,
        "timeout_keep_alive": settings.keep_alive_seconds,
        "limit_concurrency": settings.max_connections,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "log_level": settings.log_level,
    }

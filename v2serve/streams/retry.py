"""Waiting between retries, and serving one message whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from v2serve.event import Event, Reply

logger = logging.getLogger("v2serve.streams")

Handle = Callable[[Event], Awaitable[Reply]]
"""What a stream worker serves each message's Event with: ``ModelServer.handle``."""


class Backoff:
    """Delays that double from ``first`` up to ``limit``: for retrying a broker or stream that is down."""

    def __init__(self, first: float = 0.1, limit: float = 5.0) -> None:
        self._next = first
        self._limit = limit

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._limit)
        return delay


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def serve_event(handle: Handle, event: Event, where: str) -> Reply:
    """The handler's reply; should the handler raise (a bug: the graph renders its own errors), a 500 reply,
    so that the message still gets its error record."""
    try:
        return await handle(event)
    except Exception as exc:
        logger.exception("the handler raised for %s", where)
        return Reply.json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

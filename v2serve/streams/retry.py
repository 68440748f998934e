"""Waiting between retries, and serving one message whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from v2serve.event import Event, Reply
from v2serve.settings import RetrySettings

logger = logging.getLogger("v2serve.streams")

Handle = Callable[[Event], Awaitable[Reply]]
"""What a stream worker serves each message's Event with: ``ModelServer.handle``."""


class Backoff:
    """Delays that double from ``first`` up to ``limit``, each jittered to between half and all of it, so
    that consumers retrying the same broker or model do not retry in step."""

    def __init__(self, first: float = 0.1, limit: float = 5.0) -> None:
        self._next = first
        self._limit = limit

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._limit)
        return delay * random.uniform(0.5, 1.0)


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def serve_event(handle: Handle, event: Event, where: str, retry: RetrySettings | None = None) -> Reply:
    """The handler's reply. A reply whose error is retriable (a model still loading, a full queue) is tried
    again after a jittered back-off, up to ``retry.attempts`` more times; its last reply is returned then.
    Should the handler raise (a bug: the graph renders its own errors), a 500 reply, so that the message
    still gets its error record."""
    retry = retry or RetrySettings()
    backoff = None  # made on the first retry: most messages need none
    for attempt in range(retry.attempts + 1):
        try:
            reply = await handle(event)
        except Exception as exc:
            logger.exception("the handler raised for %s", where)
            return Reply.json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)
        if reply.error is None or not reply.error.retriable or attempt == retry.attempts:
            break
        backoff = backoff or Backoff(retry.backoff_s, retry.max_backoff_s)
        delay = backoff.next()
        logger.info("%s: %s; retrying in %.2f s", where, reply.error.message, delay)
        await asyncio.sleep(delay)
    return reply

"""Blocking reads on threads of their own, so that a stuck source never holds model threads or shutdown.

Filesystems without an async implementation (local files, ``memory://``, ...) are read on daemon threads:
at most ``limit`` at once. A read whose caller gave up (its deadline passed) is abandoned: it stops counting
against ``limit`` but keeps its thread until the call returns, and while ``limit`` abandoned reads are still
stuck, further reads are refused with 503 rather than piling up threads. Daemon threads are not joined at
interpreter exit, so a stuck read never holds up a SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

from v2serve.errors import Unavailable

T = TypeVar("T")


class BlockingReads:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.abandoned = 0
        """Reads given up on whose threads are still running."""
        self._slots = asyncio.Semaphore(limit)

    async def run(self, read: Callable[[], T]) -> T:
        if self.abandoned >= self.limit:
            raise Unavailable(
                f"{self.abandoned} data_url reads are stuck past their deadline; try again later", retry_after_s=5
            )
        async with self._slots:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[T] = loop.create_future()
            state = {"abandoned": False}
            thread = threading.Thread(
                target=self._work, args=(read, loop, future, state), name="v2serve-data-read", daemon=True
            )
            thread.start()
            try:
                return await future
            except asyncio.CancelledError:
                state["abandoned"] = True
                self.abandoned += 1
                raise

    def _work(
        self, read: Callable[[], T], loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], state: dict[str, bool]
    ) -> None:
        try:
            outcome: tuple[bool, object] = (True, read())
        except BaseException as exc:  # handed to the awaiting coroutine, which raises it
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits for this read any more
            loop.call_soon_threadsafe(self._settle, future, state, outcome)

    def _settle(self, future: asyncio.Future[T], state: dict[str, bool], outcome: tuple[bool, object]) -> None:
        if state["abandoned"]:
            self.abandoned -= 1
            return
        if future.done():
            return
        ok, value = outcome
        if ok:
            future.set_result(value)  # type: ignore[arg-type]
        else:
            future.set_exception(value)  # type: ignore[arg-type]

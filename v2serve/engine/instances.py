"""Worker threads of one model's instances: where its sync predict calls run.

A lighter hop than ``loop.run_in_executor``: a job goes on a SimpleQueue and its asyncio future is resolved
with ``call_soon_threadsafe``, with no concurrent.futures.Future chained in between. Under load a thread
takes the next job without waiting to be woken, and the loop's wake-ups coalesce.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()

logger = logging.getLogger("v2serve.models")


class InstanceThreads:
    """``count`` daemon threads, started on first use, running submitted calls in order of arrival."""

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        # The caller's context travels with the job, so that what model code logs carries the request id.
        self._jobs.put((loop, future, contextvars.copy_context(), function, args))
        return future

    def post(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` in a thread, with nothing to await: ``function`` delivers its own results and
        must not raise (what it raises is logged)."""
        if not self._threads:
            self._start()
        self._jobs.put((None, None, None, function, args))

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return
            for index in range(self._count):
                thread = threading.Thread(target=self._work, name=f"{self._name}-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            loop, future, context, function, args = job
            if future is None:
                try:
                    function(*args)
                except BaseException:
                    logger.exception("a job of %s failed", self._name)
                continue
            if future.cancelled():
                continue
            try:
                result = context.run(function, *args)
            except BaseException as exc:  # delivered to the awaiting request, never lost in this thread
                _deliver(loop, future, None, exc)
            else:
                _deliver(loop, future, result, None)

    def close(self) -> None:
        """Stop the threads once they finish what they are running (they are daemons: nothing waits)."""
        for _ in self._threads:
            self._jobs.put(_STOP)
        self._threads = []


def _deliver(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: BaseException | None
) -> None:
    # A loop that has closed (the server stopped while a call ran on) has nobody waiting for the result.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, future, result, error)


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: a call's result (or error) to the request awaiting it, if it still does."""
    if future.done():  # the caller gave up (deadline or disconnect)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

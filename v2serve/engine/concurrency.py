"""Bounded concurrency without batching: at most ``instances`` calls at once, at most ``max_queue_size``
waiting in arrival order, the next one refused with 503 at once.

``ConcurrencyScheduler`` keeps its slots on the event loop; ``ThreadedConcurrencyScheduler`` shares them
with a sync model's instance threads, so that the thread that finishes a predict runs the next queued one
with no trip through the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from v2serve.engine.instances import settle
from v2serve.engine.invoker import ModelInvoker
from v2serve.engine.waits import overloaded, until
from v2serve.metrics.model import ModelRecorder
from v2serve.models.base import RequestContext, Tensors


class ConcurrencyScheduler:
    """At most ``instances`` calls at once; the rest wait in arrival order, at most ``max_queue_size``.

    The slots are a counter and a queue of waiters rather than an asyncio.Semaphore: on the request path, a
    free slot is taken with no coroutine of its own (the semaphore's acquire cost a tenth of a small
    request's instructions). Only the loop touches them here; ``ThreadedConcurrencyScheduler`` shares them
    with a sync model's instance threads.
    """

    def __init__(self, invoker: ModelInvoker, stats: ModelRecorder) -> None:
        self._invoker = invoker
        self._stats = stats
        self._name = invoker.model.name
        self._max_queue = invoker.model.max_queue_size
        self._free = invoker.model.instances
        self._waiters: collections.deque[asyncio.Future[None] | _ThreadCall] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def submit(
        self, inputs: Tensors, context: RequestContext, deadline: float | None, explain: bool = False
    ) -> Any:
        if self._take_free_slot():
            self._stats.not_queued()
        else:
            await self._queue_for_slot(deadline)
        if deadline is None:
            stats = self._stats
            started = time.perf_counter_ns()
            stats.running += 1
            try:
                if explain:
                    return await self._invoker.explain(inputs, context)
                return await self._invoker.predict(inputs, context)
            finally:
                stats.running -= 1
                stats.executed(time.perf_counter_ns() - started, 1)
                self._release_slot()
        # The slot is held until the call really ends, even when the caller gave up at its deadline: the call's
        # own future is awaited, with no task around it when it can be.
        self._stats.running += 1
        started = time.perf_counter_ns()
        try:
            call = asyncio.ensure_future(
                self._invoker.explain(inputs, context) if explain else self._invoker.predict(inputs, context)
            )
        except BaseException:
            self._finished(started, None)
            raise
        call.add_done_callback(partial(self._finished, started))
        return await until(call, deadline, self._name, shield=True)

    async def stream(
        self, inputs: Tensors, context: RequestContext, deadline: float | None
    ) -> AsyncGenerator[Any, None]:
        if self._take_free_slot():
            self._stats.not_queued()
        else:
            await self._queue_for_slot(deadline)
        stats = self._stats
        started = time.perf_counter_ns()
        stats.running += 1
        try:
            async for item in self._invoker.stream(inputs, context):
                yield item
        finally:
            stats.running -= 1
            stats.executed(time.perf_counter_ns() - started, 1)
            self._release_slot()

    async def call(self, run: Callable[[], Awaitable[Any]]) -> Any:
        if not self._take_free_slot():
            await self._queue_for_slot(None)
        try:
            return await run()
        finally:
            self._release_slot()

    def _take_free_slot(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def _queue_for_slot(self, deadline: float | None) -> None:
        queued = time.perf_counter_ns()
        await self._wait_for_slot(deadline)
        self._stats.queued(time.perf_counter_ns() - queued)

    async def _wait_for_slot(self, deadline: float | None) -> None:
        # The waiter joins the queue before anything is awaited, so that the queue bound counts it at once.
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._join_queue(waiter)
        try:
            await until(waiter, deadline, self._name, shield=False)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # a slot was handed over just as the caller gave up: pass it on
            else:
                self._leave_queue(waiter)
            raise

    def _join_queue(self, waiter: asyncio.Future[None] | _ThreadCall) -> None:
        if len(self._waiters) >= self._max_queue:
            raise overloaded(self._name, self._max_queue)
        self._waiters.append(waiter)

    def _leave_queue(self, waiter: asyncio.Future[None] | _ThreadCall) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _release_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            assert not isinstance(waiter, _ThreadCall)  # only a ThreadedConcurrencyScheduler queues those
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the longest waiter
                return
        self._free += 1

    def _finished(self, started: int, call: asyncio.Future[Any] | None) -> None:
        self._stats.running -= 1
        self._stats.executed(time.perf_counter_ns() - started, 1)
        self._release_slot()
        if call is not None and not call.cancelled():
            call.exception()  # retrieved, so an abandoned failure is not reported as never retrieved

    async def close(self) -> None:
        return None


class ThreadedConcurrencyScheduler(ConcurrencyScheduler):
    """The slots of a model whose predict is sync, shared by the loop and the model's instance threads.

    A predict waits as a ``_ThreadCall``, and the instance thread that frees a slot runs the next one at
    once. Handing the slot back through the event loop cost a round trip between the two threads per
    request (a wake-up each way and the GIL passed twice), and the next request could start only after the
    loop had run the last one's completion: on one core, a third of a small model's request. Explains,
    custom operations and streams wait on the loop in the same queue, so every use of the slots takes a lock.
    """

    def __init__(self, invoker: ModelInvoker, stats: ModelRecorder) -> None:
        super().__init__(invoker, stats)
        assert invoker.sync_predict is not None
        self._sync_predict = invoker.sync_predict
        self._threads = invoker.threads
        self._lock = threading.Lock()

    async def submit(
        self, inputs: Tensors, context: RequestContext, deadline: float | None, explain: bool = False
    ) -> Any:
        if explain:
            return await super().submit(inputs, context, deadline, explain)
        call = _ThreadCall(
            inputs, context, asyncio.get_running_loop().create_future(), contextvars.copy_context(),
            time.perf_counter_ns(),
        )  # fmt: skip
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                queued = False
            else:
                super()._join_queue(call)
                queued = True
        if not queued:
            self._stats.running += 1
            self._threads.post(self._run_in_thread, call)
        try:
            # Unshielded: giving up cancels the call's future. Still queued, it leaves the queue; running, it
            # runs on in its thread and keeps its slot until it returns.
            return await until(call.future, deadline, self._name, shield=False)
        except BaseException:
            if queued:
                self._leave_queue(call)
            raise

    def _run_in_thread(self, call: _ThreadCall) -> None:
        """In an instance thread: run ``call``, then each sync predict queued behind it, for as long as the slot
        passes to one; each result goes to the loop as soon as it is there."""
        predict = self._sync_predict
        loop = call.future.get_loop()
        next_call: _ThreadCall | None = call
        while next_call is not None:
            call = next_call
            started = time.perf_counter_ns()
            try:
                result, error = call.variables.run(predict, call.inputs, call.context), None
            except BaseException as exc:  # delivered to the awaiting request, never lost in this thread
                result, error = None, exc
            ended = time.perf_counter_ns()
            next_call = self._pass_slot_from_thread(loop)
            try:
                # In the caller's context, where its observations become spans of its request (tracing).
                loop.call_soon_threadsafe(
                    self._settled, call, result, error, started, ended, next_call is None, context=call.variables
                )
            except RuntimeError:  # the loop has closed (the server stopped while the call ran): nobody waits
                return

    def _pass_slot_from_thread(self, loop: asyncio.AbstractEventLoop) -> _ThreadCall | None:
        """The next queued sync predict, which this thread runs with the slot it holds; or None, the slot
        handed to a waiter on the loop or freed."""
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if isinstance(waiter, _ThreadCall):
                    if waiter.future.cancelled():  # gave up; the loop is about to take it out of the queue
                        continue
                    return waiter
                loop.call_soon_threadsafe(self._hand_slot, waiter)
                return None
            self._free += 1
            return None

    def _settled(
        self, call: _ThreadCall, result: Any, error: BaseException | None, started: int, ended: int, released: bool
    ) -> None:
        stats = self._stats
        stats.queued(started - call.queued_ns)
        stats.executed(ended - started, 1)
        if released:
            stats.running -= 1
        settle(call.future, result, error)

    def _hand_slot(self, waiter: asyncio.Future[None]) -> None:
        # A waiter that gave up while the slot was on its way passes it on.
        if waiter.done():
            self._release_slot()
        else:
            waiter.set_result(None)

    def _take_free_slot(self) -> bool:
        with self._lock:
            return super()._take_free_slot()

    def _join_queue(self, waiter: asyncio.Future[None] | _ThreadCall) -> None:
        with self._lock:
            super()._join_queue(waiter)

    def _leave_queue(self, waiter: asyncio.Future[None] | _ThreadCall) -> None:
        with self._lock:
            super()._leave_queue(waiter)

    def _release_slot(self) -> None:
        """On the loop: the slot passes straight to the longest waiter (a sync predict starts in a thread),
        or becomes free."""
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if isinstance(waiter, _ThreadCall):
                    if waiter.future.done():
                        continue
                    break
                if not waiter.done():
                    waiter.set_result(None)
                    return
            else:
                self._free += 1
                return
        self._stats.running += 1
        self._threads.post(self._run_in_thread, waiter)


@dataclass(eq=False, slots=True)
class _ThreadCall:
    """A sync predict: queued for a slot, then run in an instance thread (``variables``: the caller's context
    variables, so that what model code logs carries the request id)."""

    inputs: Tensors
    context: RequestContext
    future: asyncio.Future[Any]
    variables: contextvars.Context
    queued_ns: int

"""Scheduling a model's predict calls: bounded concurrency, a bounded queue, deadlines, dynamic batching.

Every request reaches ``predict`` through its model's scheduler:

- ``ConcurrencyScheduler`` (batching off): at most ``instances`` calls run at once; at most
  ``max_queue_size`` wait, and the next one gets 503 with Retry-After at once. A sync model's instance
  thread runs the predicts queued behind the one it finishes, with no trip through the event loop.
- ``BatchScheduler`` (``max_batch_size`` > 1): ``instances`` workers take turns to gather a batch: the
  first waiting request and every compatible one queued behind it (same input names, dtypes and trailing
  shapes), up to ``max_batch_size`` rows. A batch smaller than the last one waits up to
  ``max_batch_delay_ms`` for the rest; a request that arrives alone after lone ones runs at once. One
  predict runs on the concatenation and the outputs are split back by rows. Requests are validated
  before they queue, so a malformed one fails alone; a batch the model rejects with a 4xx error (it found
  one request bad: an image that does not decode) runs again one request at a time, so only that one fails.

A deadline (absolute ``loop.time()``) fails a request with 504 if it is still queued when the deadline
passes, or if its predict has not returned by then (the call itself runs on: threads cannot be killed).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import itertools
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np

from v2serve.engine.instances import settle
from v2serve.engine.invoker import ModelInvoker
from v2serve.engine.outputs import as_output_dict
from v2serve.errors import DeadlineExceeded, InferenceError, ServerOverloaded, V2ServeError
from v2serve.metrics.model import ModelRecorder
from v2serve.models.base import RequestContext, Tensors


class Scheduler(Protocol):
    """Runs a model's predict (or, with ``explain``, its explain) under the model's queue bound, instance
    count and the request's deadline; a batching scheduler also batches predicts (never explains)."""

    @property
    def waiting(self) -> int:
        """Requests queued for an instance or a batch."""
        ...

    async def submit(
        self, inputs: Tensors, context: RequestContext, deadline: float | None, explain: bool = False
    ) -> Any: ...

    def stream(self, inputs: Tensors, context: RequestContext, deadline: float | None) -> AsyncGenerator[Any, None]:
        """A streaming predict's items; the stream holds an instance until it ends (the deadline bounds only
        the wait for one)."""
        ...

    async def call(self, run: Callable[[], Awaitable[Any]]) -> Any:
        """What ``run`` returns, run under the same bound as predict (at most ``instances`` at once, at most
        ``max_queue_size`` waiting, then 503): a model's calls that are not predicts (custom operations,
        MLRun-style documents), which a flood must not turn into an unbounded queue of threads."""
        ...

    async def close(self) -> None: ...


def make_scheduler(invoker: ModelInvoker, stats: ModelRecorder) -> Scheduler:
    model = invoker.model
    if model.max_batch_size > 1:
        return BatchScheduler(invoker, stats)
    if invoker.sync_predict is not None:
        return ThreadedConcurrencyScheduler(invoker, stats)
    return ConcurrencyScheduler(invoker, stats)


async def _timed_predict(
    invoker: ModelInvoker,
    stats: ModelRecorder,
    inputs: Tensors,
    context: RequestContext,
    requests: int = 1,
    explain: bool = False,
) -> Any:
    started = time.perf_counter_ns()
    stats.running += 1
    try:
        if explain:
            return await invoker.explain(inputs, context)
        return await invoker.predict(inputs, context)
    finally:
        stats.running -= 1
        stats.executed(time.perf_counter_ns() - started, requests)


def _overloaded(name: str, limit: int) -> ServerOverloaded:
    return ServerOverloaded(f"model {name!r} has {limit} requests waiting already; retry later", retry_after_s=1)


def _expired(name: str) -> DeadlineExceeded:
    return DeadlineExceeded(f"model {name!r} did not answer before the request's deadline")


async def _until(future: asyncio.Future[Any], deadline: float | None, name: str, *, shield: bool) -> Any:
    """Await ``future`` until the deadline. ``shield`` work that must run on when its caller gives up (a started
    predict); other waits are cancelled when their caller gives up or the deadline passes (a shielded wait for
    a slot would leak the slot).

    One waiter and one timer: ``asyncio.wait_for`` over ``asyncio.shield`` cost two more futures and a task's
    worth of callbacks on every request of a model with a deadline."""
    if deadline is None or future.done():
        return await future
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake = partial(_resolve, waiter, None)
    future.add_done_callback(wake)
    timer = loop.call_at(deadline, _resolve, waiter, None)
    try:
        await waiter
    except asyncio.CancelledError:
        if not shield:
            future.cancel()
        raise
    finally:
        timer.cancel()
        future.remove_done_callback(wake)
    if future.done():
        return future.result()
    if not shield:
        future.cancel()
    raise _expired(name)


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
        return await _until(call, deadline, self._name, shield=True)

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
            await _until(waiter, deadline, self._name, shield=False)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # a slot was handed over just as the caller gave up: pass it on
            else:
                self._leave_queue(waiter)
            raise

    def _join_queue(self, waiter: asyncio.Future[None] | _ThreadCall) -> None:
        if len(self._waiters) >= self._max_queue:
            raise _overloaded(self._name, self._max_queue)
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
            return await _until(call.future, deadline, self._name, shield=False)
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


@dataclass(eq=False)
class _Job:
    inputs: Tensors
    context: RequestContext
    deadline: float | None
    future: asyncio.Future[Any]
    rows: int
    key: tuple[Any, ...] | None
    """Requests batch together only when their keys are equal; None runs alone."""
    queued_ns: int = 0
    explain: bool = False


class BatchScheduler:
    def __init__(self, invoker: ModelInvoker, stats: ModelRecorder) -> None:
        model = invoker.model
        self._invoker = invoker
        self._stats = stats
        self._model = model
        self._max_rows = model.max_batch_size
        self._delay_s = model.max_batch_delay_ms / 1000
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=model.max_queue_size)
        self._queued_rows = 0
        self._target_rows = 1
        """Rows worth waiting for: as many as the last batch held (see ``_gather``)."""
        self._filled: asyncio.Future[bool] | None = None
        """Set while a worker waits for batch-mates: resolved once ``_wanted_rows`` are queued, or at the delay."""
        self._wanted_rows = 0
        self._gathering = asyncio.Lock()
        self._workers: list[asyncio.Task[None]] = []
        self._calls = ConcurrencyScheduler(invoker, stats)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    async def call(self, run: Callable[[], Awaitable[Any]]) -> Any:
        # Bounded apart from the batches: the same instance count and queue bound, slots of their own.
        return await self._calls.call(run)

    def stream(self, inputs: Tensors, context: RequestContext, deadline: float | None) -> AsyncGenerator[Any, None]:
        # Unreachable from a registered model: the invoker refuses a streaming predict with batching.
        raise InferenceError(f"model {self._model.name!r} batches its requests, so it cannot stream")

    async def submit(
        self, inputs: Tensors, context: RequestContext, deadline: float | None, explain: bool = False
    ) -> Any:
        loop = asyncio.get_running_loop()
        if not self._workers:
            self._workers = [loop.create_task(self._work()) for _ in range(self._model.instances)]
        rows, key = (0, None) if explain else _batch_key(inputs, self._max_rows)  # an explain runs alone
        job = _Job(inputs, context, deadline, loop.create_future(), rows, key, time.perf_counter_ns(), explain)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise _overloaded(self._model.name, self._queue.maxsize) from None
        self._queued_rows += rows
        filled = self._filled
        if filled is not None and self._queued_rows >= self._wanted_rows and not filled.done():
            filled.set_result(True)
        # Unshielded: giving up cancels the job, which a worker then skips (or settles no more).
        return await _until(job.future, deadline, self._model.name, shield=False)

    async def _work(self) -> None:
        carried: _Job | None = None
        while True:
            # One worker gathers at a time; the others run their batches meanwhile.
            async with self._gathering:
                if carried is None:
                    carried = await self._queue.get()
                    self._queued_rows -= carried.rows
                batch, carried = await self._gather(carried)
            await self._run(batch)

    def _take_queued(self) -> _Job | None:
        try:
            job = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        self._queued_rows -= job.rows
        return job

    async def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None]:
        """The batch that starts with ``first``, and an incompatible request met on the way, if any.

        The batch takes every compatible request queued behind ``first``, up to ``max_batch_size`` rows.
        If it then holds fewer rows than the last batch did, it waits, up to ``max_batch_delay_ms``, for
        the rest: under steady load the same clients come back for every batch, so the last batch's size
        says how many are on their way. A request that arrives alone after lone requests runs at once, and
        when load drops, one batch waits out the delay and the next one expects fewer. (A fixed quiet gap
        cannot tell a lull from a loop busy answering the last batch, and loop timers are too coarse for
        sub-millisecond gaps.) The waiting worker is woken once, when enough rows are queued, not per
        arrival.
        """
        batch, rows = [first], first.rows
        if first.key is None:
            return batch, None
        loop = asyncio.get_running_loop()
        closes = loop.time() + self._delay_s
        carried = None
        while rows < self._max_rows:
            job = self._take_queued()
            if job is None:
                if rows >= self._target_rows or loop.time() >= closes:
                    break
                await self._wait_for_rows(self._target_rows - rows, closes)
                continue
            if job.key != first.key or rows + job.rows > self._max_rows:
                carried = job
                break
            batch.append(job)
            rows += job.rows
        self._target_rows = rows
        return batch, carried

    async def _wait_for_rows(self, wanted: int, closes: float) -> None:
        loop = asyncio.get_running_loop()
        filled = self._filled = loop.create_future()
        self._wanted_rows = wanted
        timer = loop.call_at(closes, _resolve, filled, False)
        try:
            await filled
        finally:
            timer.cancel()
            self._filled = None

    async def _run(self, batch: list[_Job]) -> None:
        now = asyncio.get_running_loop().time()
        live = []
        for job in batch:
            if job.future.done():  # the caller gave up (deadline or disconnect)
                continue
            if job.deadline is not None and now > job.deadline:
                job.future.set_exception(_expired(self._model.name))
                continue
            live.append(job)
        if not live:
            return
        started = time.perf_counter_ns()
        for job in live:
            self._stats.queued(started - job.queued_ns)
        try:
            if len(live) == 1:
                job = live[0]
                result = await _timed_predict(self._invoker, self._stats, job.inputs, job.context, explain=job.explain)
                _settle(job, result)
                return
            inputs = {name: np.concatenate([job.inputs[name] for job in live]) for name in live[0].inputs}
            context = dataclasses.replace(live[0].context, batch=[job.context for job in live])
            predicted = await _timed_predict(self._invoker, self._stats, inputs, context, len(live))
            result = as_output_dict(self._model, predicted)
            for job, outputs in zip(live, self._split(result, [job.rows for job in live]), strict=True):
                _settle(job, outputs)
        except V2ServeError as exc:
            if len(live) > 1 and 400 <= exc.status_code < 500:
                # The model found a request bad (an image that does not decode): run them one at a time, so
                # that only the bad one fails and its error names its own rows.
                await self._run_alone(live)
            else:
                _fail(live, exc)
        except Exception as exc:
            _fail(live, exc)

    async def _run_alone(self, jobs: list[_Job]) -> None:
        for job in jobs:
            if job.future.done():
                continue
            try:
                _settle(job, await _timed_predict(self._invoker, self._stats, job.inputs, job.context))
            except Exception as exc:
                _fail([job], exc)

    def _split(self, result: dict[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
        total = sum(rows)
        for name, array in result.items():
            if array.ndim == 0 or array.shape[0] != total:
                raise InferenceError(
                    f"model {self._model.name!r} returned {name!r} with shape {list(array.shape)} for a batch "
                    f"of {total} rows; a batching model must return one row per input row"
                )
        # Slices (views), rather than np.split: its Python-level work cost more than the rest of a batch's split.
        bounds = list(itertools.accumulate(rows, initial=0))
        return [
            {name: array[start:stop] for name, array in result.items()} for start, stop in itertools.pairwise(bounds)
        ]

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []


def _resolve(future: asyncio.Future[Any], value: Any, *_: object) -> None:
    if not future.done():
        future.set_result(value)


def _fail(jobs: list[_Job], exc: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)


def _settle(job: _Job, result: Any) -> None:
    if not job.future.done():
        job.future.set_result(result)


def _batch_key(inputs: Tensors, max_rows: int) -> tuple[int, tuple[Any, ...] | None]:
    """Rows of the request and what a batch-mate must match: input names, dtypes and trailing shapes."""
    if len(inputs) == 1:  # the common case, without the sort
        ((name, array),) = inputs.items()
        if array.ndim == 0:
            return 0, None
        rows = array.shape[0]
        if rows == 0 or rows > max_rows:
            return rows, None
        return rows, (name, array.dtype, array.shape[1:])
    arrays = list(inputs.values())
    if not arrays or any(a.ndim == 0 for a in arrays):
        return 0, None
    rows = arrays[0].shape[0]
    if rows == 0 or rows > max_rows or any(a.shape[0] != rows for a in arrays):
        return rows, None
    return rows, tuple(sorted((name, a.dtype, a.shape[1:]) for name, a in inputs.items()))

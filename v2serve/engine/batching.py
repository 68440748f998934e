"""Dynamic batching: ``BatchScheduler`` joins compatible concurrent requests into one predict and splits
its outputs back by rows (see ``scheduler`` for the rules)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from v2serve.engine.concurrency import ConcurrencyScheduler
from v2serve.engine.invoker import ModelInvoker
from v2serve.engine.outputs import as_output_dict
from v2serve.engine.waits import expired, overloaded, resolve, timed_predict, until
from v2serve.errors import InferenceError, V2ServeError
from v2serve.metrics.model import ModelRecorder
from v2serve.models.base import RequestContext, Tensors


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
            raise overloaded(self._model.name, self._queue.maxsize) from None
        self._queued_rows += rows
        filled = self._filled
        if filled is not None and self._queued_rows >= self._wanted_rows and not filled.done():
            filled.set_result(True)
        # Unshielded: giving up cancels the job, which a worker then skips (or settles no more).
        return await until(job.future, deadline, self._model.name, shield=False)

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
        timer = loop.call_at(closes, resolve, filled, False)
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
                job.future.set_exception(expired(self._model.name))
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
                result = await timed_predict(self._invoker, self._stats, job.inputs, job.context, explain=job.explain)
                _settle(job, result)
                return
            inputs = {name: np.concatenate([job.inputs[name] for job in live]) for name in live[0].inputs}
            context = dataclasses.replace(live[0].context, batch=[job.context for job in live])
            predicted = await timed_predict(self._invoker, self._stats, inputs, context, len(live))
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
                _settle(job, await timed_predict(self._invoker, self._stats, job.inputs, job.context))
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

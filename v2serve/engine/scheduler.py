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

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

from v2serve.engine.batching import BatchScheduler
from v2serve.engine.concurrency import ConcurrencyScheduler, ThreadedConcurrencyScheduler
from v2serve.engine.invoker import ModelInvoker
from v2serve.metrics.model import ModelRecorder
from v2serve.models.base import RequestContext, Tensors

__all__ = ["BatchScheduler", "ConcurrencyScheduler", "Scheduler", "ThreadedConcurrencyScheduler", "make_scheduler"]


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

"""What every scheduler shares: a predict call timed into the model's statistics, the errors of a full
queue and of a passed deadline, and awaiting a future until a deadline."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from v2serve.engine.invoker import ModelInvoker
from v2serve.errors import DeadlineExceeded, ServerOverloaded
from v2serve.metrics.model import ModelRecorder
from v2serve.models.base import RequestContext, Tensors


async def timed_predict(
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


def overloaded(name: str, limit: int) -> ServerOverloaded:
    return ServerOverloaded(f"model {name!r} has {limit} requests waiting already; retry later", retry_after_s=1)


def expired(name: str) -> DeadlineExceeded:
    return DeadlineExceeded(f"model {name!r} did not answer before the request's deadline")


async def until(future: asyncio.Future[Any], deadline: float | None, name: str, *, shield: bool) -> Any:
    """Await ``future`` until the deadline. ``shield`` work that must run on when its caller gives up (a started
    predict); other waits are cancelled when their caller gives up or the deadline passes (a shielded wait for
    a slot would leak the slot).

    One waiter and one timer: ``asyncio.wait_for`` over ``asyncio.shield`` cost two more futures and a task's
    worth of callbacks on every request of a model with a deadline."""
    if deadline is None or future.done():
        return await future
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake = partial(resolve, waiter, None)
    future.add_done_callback(wake)
    timer = loop.call_at(deadline, resolve, waiter, None)
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
    raise expired(name)


def resolve(future: asyncio.Future[Any], value: Any, *_: object) -> None:
    if not future.done():
        future.set_result(value)

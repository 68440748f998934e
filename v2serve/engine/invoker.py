"""Calling a model's methods: sync ones in the thread pool, async ones on the loop, decided once."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from v2serve.engine.instances import InstanceThreads
from v2serve.models.base import Model


@dataclass(frozen=True, slots=True)
class BoundMethod:
    """A model method with its calling convention resolved at registration time."""

    call: Callable[..., Any]
    is_async: bool


def bind(method: Callable[..., Any], arity: int) -> BoundMethod:
    """Adapt ``method`` to be called with ``arity`` positional arguments, dropping trailing ones it lacks.

    Lets authors write ``predict(self, inputs)`` when they do not need the request context.
    """
    accepted = _positional_capacity(method)
    call = method if accepted >= arity else _truncating(method, accepted)
    return BoundMethod(call, inspect.iscoroutinefunction(method))


def _positional_capacity(method: Callable[..., Any]) -> int:
    count = 0
    for param in inspect.signature(method).parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            return 1 << 16
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def _truncating(method: Callable[..., Any], accepted: int) -> Callable[..., Any]:
    # A plain function for async methods too: it returns the method's coroutine, which the caller awaits,
    # rather than wrapping it in a coroutine of its own (one frame less per request).
    def call(*args: Any) -> Any:
        return method(*args[:accepted])

    return call


class Runner:
    """Calls bound methods: awaited on the loop when async, in the thread pool when sync."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def run(self, method: BoundMethod, *args: Any) -> Any:
        if method.is_async:
            return await method.call(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, method.call, *args)


class ModelInvoker(Runner):
    """Runs a model's lifecycle and request methods without ever blocking the event loop."""

    def __init__(self, model: Model, executor: Executor) -> None:
        super().__init__(executor)
        self.model = model
        overridden = [
            name
            for name in ("preprocess", "predict", "postprocess")
            if name == "predict" or getattr(type(model), name) is not getattr(Model, name)
        ]
        self.streams = inspect.isgeneratorfunction(model.predict) or inspect.isasyncgenfunction(model.predict)
        """predict is a generator (sync or async): each item it yields is one response of a stream."""
        if self.streams and model.max_batch_size > 1:
            raise ValueError(f"model {model.name!r}: a streaming predict (a generator) cannot be batched")
        self._pipeline = [bind(getattr(model, name), 2) for name in overridden]
        self._postprocesses = int("postprocess" in overridden)
        self._pipeline_is_sync = not any(step.is_async for step in self._pipeline)
        # The common async model (predict only): its coroutine is awaited directly.
        only_predict = len(self._pipeline) == 1 and not self._pipeline_is_sync
        self._async_predict = model.predict if only_predict else None
        self._predict_takes_context = _positional_capacity(model.predict) >= 2
        self._explain = bind(model.explain, 2)
        overrides_finalize = type(model).finalize is not Model.finalize
        self.finalize = model.finalize if overrides_finalize else None
        """The model's per-request ``finalize``, or None when it keeps the default (which changes nothing)."""
        serve_document = getattr(model, "serve_document", None) if model.takes_documents else None
        self.document = None if serve_document is None else bind(serve_document, 3)
        """``serve_document(operation, body, event_id)`` of a model that takes documents (MLRun's classes)."""
        self._load = bind(model.load, 0)
        self._unload = bind(model.unload, 0)
        self._operations: dict[str, BoundMethod] = {}
        self.threads = InstanceThreads(max(1, model.instances), f"v2serve-{model.name}")
        """The model's instance threads, where its sync predicts run."""
        self.sync_predict = self._run_sync_pipeline if self._pipeline_is_sync and not self.streams else None
        """preprocess -> predict -> postprocess as one plain call, to run in an instance thread; None when a
        step is async (or predict streams)."""

    async def load(self) -> None:
        await self.run(self._load)

    async def unload(self) -> None:
        try:
            await self.run(self._unload)
        finally:
            self.threads.close()

    def predict(self, inputs: Any, context: Any) -> Awaitable[Any]:
        """preprocess -> predict -> postprocess; one hop to an instance thread when all three are sync.

        A plain function returning what to await (the instance thread's future, or the model's own coroutine
        when predict is its only async step), so that the request path awaits no wrapper coroutine.
        """
        if self._pipeline_is_sync:
            return self.threads.submit(self._run_sync_pipeline, inputs, context)
        if self._async_predict is not None:
            # Called here with the arguments it takes, rather than through bind's truncating wrapper: one call
            # less per request.
            if self._predict_takes_context:
                awaitable: Awaitable[Any] = self._async_predict(inputs, context)
            else:
                awaitable = self._async_predict(inputs)
            return awaitable
        return self._run_mixed_pipeline(inputs, context)

    async def _run_mixed_pipeline(self, inputs: Any, context: Any) -> Any:
        value = inputs
        for step in self._pipeline:
            value = await self.run(step, value, context)
        return value

    def _run_sync_pipeline(self, inputs: Any, context: Any) -> Any:
        value = inputs
        for step in self._pipeline:
            value = step.call(value, context)
        return value

    async def stream(self, inputs: Any, context: Any) -> AsyncGenerator[Any, None]:
        """The items a streaming predict yields, each through postprocess, as they are produced.

        preprocess runs first; a sync generator advances in the instance threads one item at a time, an async
        one on the loop. Closing this iterator (the client went away) closes the model's generator, so the
        model stops at its next ``yield``.
        """
        value = inputs
        *before, predict = self._pipeline[: len(self._pipeline) - self._postprocesses]
        for step in before:
            value = await self.run(step, value, context)
        produced = predict.call(value, context)  # a generator object: no model code has run yet
        after = self._pipeline[len(self._pipeline) - self._postprocesses :]
        items = _async_items(produced) if inspect.isasyncgen(produced) else self._thread_items(produced)
        try:
            async for item in items:
                for step in after:
                    item = await self.run(step, item, context)
                yield item
        finally:
            await items.aclose()

    async def _thread_items(self, generator: Iterator[Any]) -> AsyncGenerator[Any, None]:
        steps = _Stepper(generator)
        try:
            while True:
                item = await self.threads.submit(steps.next)
                if item is _END:
                    return
                yield item
        finally:
            # Queued behind a next() still running (the caller gave up while waiting for it): the stepper's
            # lock makes the close wait for it.
            closing = self.threads.submit(steps.close)
            closing.add_done_callback(_retrieve)

    async def explain(self, inputs: Any, context: Any) -> Any:
        return await self.run(self._explain, inputs, context)

    def operation(self, name: str) -> BoundMethod | None:
        """The custom operation ``op_<name>``, or None when the model has none by that name."""
        if name not in self._operations:
            method = self.model.custom_operation(name)
            if method is None:
                return None
            self._operations[name] = bind(method, 2)
        return self._operations[name]


_END = object()


class _Stepper:
    """Advances a sync generator from whichever instance thread runs the step, one step at a time."""

    def __init__(self, generator: Iterator[Any]) -> None:
        self._generator = generator
        self._lock = threading.Lock()

    def next(self) -> Any:
        with self._lock:
            return next(self._generator, _END)

    def close(self) -> None:
        with self._lock:
            close = getattr(self._generator, "close", None)
            if close is not None:
                close()


async def _async_items(generator: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    try:
        async for item in generator:
            yield item
    finally:
        aclose = getattr(generator, "aclose", None)
        if aclose is not None:
            await aclose()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a failure to close is the model's; it is not reported as never retrieved

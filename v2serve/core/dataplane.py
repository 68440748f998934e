"""The data plane: the operations on registered models, typed, through three doors.

- ``infer``: a decoded request in (a front-end's decoder, run against the model's schema), an
  InferenceResult with numpy outputs out;
- ``stream``: the same, as an async iterator of results (a model whose predict is a generator);
- ``call``: a value in, a value out (custom operations, MLRun-style models that take documents).

It knows nothing of HTTP, JSON bytes or streams: each front-end builds its decoder from its own wire format
and renders what comes back (``InferenceResult.encode`` times the rendering). Every door runs under the same
accounting (``ModelEntry.serving``): in-flight count, readiness, status, duration, so that a model's Triton
statistics and Prometheus histograms mean the same thing whichever front-end served a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import AsyncGenerator, Awaitable, Mapping
from functools import partial
from typing import Any

from v2serve.core.operations import Kind, kind_of
from v2serve.engine.outputs import as_output_dict
from v2serve.engine.registry import ModelEntry, ModelRegistry, ModelState, Serving
from v2serve.errors import (
    InferenceError,
    InvalidRequest,
    NotImplementedOperation,
    OperationNotFound,
    V2ServeError,
)
from v2serve.models.base import Model, RequestContext
from v2serve.protocol.bodies import Decoder
from v2serve.protocol.decode import DecodedRequest
from v2serve.protocol.ids import new_request_id
from v2serve.protocol.outputs import requested_outputs, select_outputs
from v2serve.protocol.response import InferenceResult
from v2serve.protocol.schemas import (
    ModelMetadata,
    ModelReadiness,
    NotReadyModel,
    Readiness,
    StatisticsBody,
    TensorMetadata,
)
from v2serve.protocol.types import InferenceRequest, TensorSpec

logger = logging.getLogger("v2serve.dataplane")

UNKNOWN_OPERATION = "unknown"
"""The metric label of every operation a model does not have (and of requests that named no served model)."""
_NO_HEADERS: Mapping[str, str] = {}


class DataPlane:
    """The operations on registered models: ``infer``, ``stream`` and ``call``, plus what the server answers
    about them (metadata, readiness, statistics). V2ServeError is raised for every failure; a model's own
    exception becomes an InferenceError (500)."""

    def __init__(self, registry: ModelRegistry, *, debug: bool = False) -> None:
        self.registry = registry
        self._debug = debug

    # ------------------------------------------------------------ about models

    def model_metadata(self, entry: ModelEntry) -> ModelMetadata:
        model = entry.model
        metadata = ModelMetadata(
            name=model.name,
            platform=model.platform,
            inputs=[_tensor_metadata(spec) for spec in model.inputs],
            outputs=[_tensor_metadata(spec) for spec in model.outputs],
        )
        if model.version is not None:
            metadata["version"] = model.version
        versions = self.registry.versions(model.name)
        if versions:
            metadata["versions"] = versions
        if model.feature_names:
            metadata["parameters"] = {"feature_names": list(model.feature_names)}
        return metadata

    def model_readiness(self, entry: ModelEntry, load_failures: Mapping[str, str]) -> ModelReadiness:
        """The version's state; ``load_failures``: the repository's last failed load of each model name."""
        ready = entry.state is ModelState.READY
        readiness = ModelReadiness(name=entry.name, ready=ready)
        if not ready:
            readiness["state"] = entry.state.value
            if entry.reason:
                readiness["reason"] = entry.reason
        failure = load_failures.get(entry.name)
        if failure:
            readiness["last_load_error"] = failure
        return readiness

    def server_readiness(self, *, allow_empty: bool) -> Readiness:
        """Ready when every model is (``allow_empty``: a graph of tasks alone is ready with none)."""
        if self.registry.is_ready(allow_empty=allow_empty):
            return Readiness(ready=True)
        pending = []
        for entry in self.registry:
            if entry.state is not ModelState.READY:
                item = NotReadyModel(name=entry.name, state=entry.state.value)
                if entry.version is not None:
                    item["version"] = entry.version
                if entry.reason:
                    item["reason"] = entry.reason
                pending.append(item)
        return Readiness(ready=False, models=pending)

    def statistics(self, entry: ModelEntry | None = None, *, every_version: bool = True) -> StatisticsBody:
        """Triton's statistics of one version, of every version of its model, or (no entry) of every model."""
        if entry is None:
            entries = list(self.registry)
        else:
            entries = self.registry.entries_of(entry.name) if every_version else [entry]
        return StatisticsBody(model_stats=[e.stats.triton_statistics() for e in entries])

    # ------------------------------------------------------------ operations

    async def infer(
        self,
        entry: ModelEntry,
        decode: Decoder,
        explain: bool = False,
        headers: Mapping[str, str] = _NO_HEADERS,
        event_id: str | None = None,
    ) -> InferenceResult:
        """Run the inputs ``decode`` builds against the model's schema through the model's scheduler; the
        outputs the request asked for. Decoding is timed as the request's decode step; render the result with
        ``InferenceResult.encode`` so that encoding is timed too."""
        with Serving(entry, "explain" if explain else "infer", True) as call:
            entry.require_ready()
            if entry.invoker.streams:
                raise InvalidRequest(
                    f"model {entry.name!r} streams its responses: use generate_stream (server-sent events) or "
                    "TorchServe's /predictions (chunked)"
                )
            decoded = self._decode(entry, decode, explain)
            context, wanted, deadline = self._prepare(entry, decoded, headers, event_id)
            try:  # _guarded, inline: one coroutine less per request
                produced = await entry.scheduler.submit(decoded.inputs, context, deadline, explain=explain)
            except V2ServeError:
                raise
            except Exception as exc:
                raise self._model_failed(entry, exc) from exc
            result = self._result(entry, produced, wanted, context, decoded.lone)
            call.status = 200
            return result

    async def stream(
        self,
        entry: ModelEntry,
        decode: Decoder,
        *,
        headers: Mapping[str, str] = _NO_HEADERS,
        event_id: str | None = None,
    ) -> AsyncGenerator[InferenceResult, None]:
        """The responses of a streaming model (one whose predict is a generator), each as soon as the model
        yields it; a model that does not stream gives its one response.

        Everything that can fail before the model's first item (decoding, readiness, the queue, the model
        raising at once) raises here, so that a front-end can still answer with an error status; a failure
        after that ends the iterator with the error. Close the iterator (``aclose``) to stop the model.
        """
        if not entry.invoker.streams:
            result = await self.infer(entry, decode, headers=headers, event_id=event_id)
            return _one(result)
        call = entry.serving("infer")  # counted from here; _rest_of_stream ends it, or the failure below
        try:
            entry.require_ready()
            decoded = self._decode(entry, decode, False)
            context, wanted, deadline = self._prepare(entry, decoded, headers, event_id)
            items = entry.scheduler.stream(decoded.inputs, context, deadline)
            first = await self._guarded(entry, anext(items, _END))
        except BaseException as exc:
            call.__exit__(type(exc), exc, None)
            raise
        return self._rest_of_stream(call, items, first, wanted, context, decoded.lone)

    async def _rest_of_stream(
        self,
        call: Serving,
        items: AsyncGenerator[Any, None],
        first: Any,
        wanted: dict[str, bool] | None,
        context: RequestContext,
        lone: bool,
    ) -> AsyncGenerator[InferenceResult, None]:
        entry = call.entry
        with call:  # ends the accounting begun in ``stream``, once the model's iterator is closed
            try:
                item = first
                while item is not _END:
                    yield self._result(entry, item, wanted, context, lone)
                    item = await self._guarded(entry, anext(items, _END))
                call.status = 200
            finally:
                await items.aclose()

    async def call(
        self,
        entry: ModelEntry,
        operation: str,
        value: Any,
        *,
        headers: Mapping[str, str] = _NO_HEADERS,
        event_id: str | None = None,
        named: str | None = None,
    ) -> Any:
        """A value in, the model's value out: a custom operation (``op_<operation>``), or, on a model that
        takes documents (MLRun's classes), infer or explain on the document as it was sent; such a model is
        told the operation as the request ``named`` it (``predict``), as MLRun tells it. Runs under the
        model's scheduler bound (instances, queue); counted like the other doors."""
        kind = kind_of(entry, operation)
        if kind is Kind.DOCUMENT:
            label, inference = operation, True
            method = entry.invoker.document
        else:
            method = entry.invoker.operation(operation)
            # Operation names come from clients: only the model's own ones become metric labels.
            label, inference = (operation if method else UNKNOWN_OPERATION), False
        with entry.serving(label, inference=inference) as call:
            entry.require_ready()
            if method is None:
                if kind is Kind.TENSORS:
                    raise InvalidRequest(f"model {entry.name!r} takes tensors, not documents")
                raise OperationNotFound(
                    f"model {entry.name!r} has no operation {operation!r}; "
                    "operations: infer, infer_dict, explain, ready and its op_<name> methods"
                )
            if kind is Kind.DOCUMENT:
                run = partial(entry.invoker.run, method, named or operation, value, event_id)
            else:
                context = RequestContext(id=event_id or new_request_id(), headers=headers)
                run = partial(entry.invoker.run, method, value, context)
            answer = await self._guarded(entry, entry.scheduler.call(run))
            call.status = 200
            return answer

    def _prepare(
        self, entry: ModelEntry, decoded: DecodedRequest, headers: Mapping[str, str], event_id: str | None
    ) -> tuple[RequestContext, dict[str, bool] | None, float | None]:
        request = decoded.request
        if request.outputs is None and not request.parameters and not decoded.all_binary_outputs:
            wanted = None  # every output, as JSON (most requests): requested_outputs' answer, without the call
        else:
            wanted = requested_outputs(entry.schema, request, decoded.all_binary_outputs)
        context = RequestContext(
            id=request.id if request.id is not None else (event_id or new_request_id()),
            parameters=request.parameters,
            input_parameters={tensor.name: tensor.parameters for tensor in request.inputs},
            requested_outputs=None if wanted is None else list(wanted),
            headers=headers,
        )
        if not request.parameters and entry.model.timeout_s is None:
            return context, wanted, None  # no deadline: most requests, without _deadline's call
        return context, wanted, _deadline(entry.model, request)

    def _result(
        self, entry: ModelEntry, produced: Any, wanted: dict[str, bool] | None, context: RequestContext, lone: bool
    ) -> InferenceResult:
        produced = as_output_dict(entry.model, produced)
        finalize = entry.invoker.finalize
        if finalize is not None:
            produced = finalize(produced, context)
        outputs = select_outputs(entry.schema, produced, wanted)
        result = InferenceResult(entry.model.name, entry.model.version, context.id, outputs, lone)
        result.on_encoded = entry.stats.encoded
        return result

    def _decode(self, entry: ModelEntry, decode: Decoder, explain: bool) -> DecodedRequest:
        if explain and type(entry.model).explain is Model.explain:
            raise NotImplementedOperation(f"model {entry.name!r} does not implement explain")
        started = time.perf_counter_ns()
        try:
            decoded = decode(entry.schema)
        except (ValueError, MemoryError, RecursionError) as exc:
            # What the checks before numpy let through (a shape numpy cannot hold, data too deep or too big
            # to convert) is still the request's fault, not the server's.
            raise InvalidRequest(f"the request's tensors cannot be decoded: {type(exc).__name__}: {exc}") from None
        entry.stats.decoded(time.perf_counter_ns() - started + decoded.parse_ns)
        return decoded

    async def _guarded(self, entry: ModelEntry, call: Awaitable[Any]) -> Any:
        """Await model code; anything it raises that is not a V2ServeError becomes an InferenceError."""
        try:
            return await call
        except V2ServeError:
            raise
        except Exception as exc:
            raise self._model_failed(entry, exc) from exc

    def _model_failed(self, entry: ModelEntry, exc: Exception) -> InferenceError:
        logger.exception("model %r raised", entry.name)
        message = f"model {entry.name!r} failed: {type(exc).__name__}: {exc}"
        if self._debug:
            message += "\n" + traceback.format_exc()
        return InferenceError(message)


_END = object()


async def _one(result: InferenceResult) -> AsyncGenerator[InferenceResult, None]:
    yield result


def _deadline(model: Model, request: InferenceRequest) -> float | None:
    """The request's deadline on the loop clock: ``parameters.timeout`` (microseconds, as in Triton), else the
    model's ``timeout_s``."""
    timeout = request.parameters.get("timeout")
    if timeout is None:
        seconds = model.timeout_s
    elif isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        seconds = timeout / 1_000_000
    else:
        raise InvalidRequest(f"parameters.timeout must be a positive number of microseconds, got {timeout!r}")
    return None if seconds is None else asyncio.get_running_loop().time() + seconds


def _tensor_metadata(spec: TensorSpec) -> TensorMetadata:
    return TensorMetadata(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))

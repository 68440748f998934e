"""The data plane: the v2 operations on one model (infer, infer_dict, explain and custom operations), typed.

A request body is decoded into numpy inputs by ``protocol`` (checked against the model's schema), run through
the model's scheduler (off the event loop), and the outputs it asked for come back as an InferenceResult for
the caller to render: JSON or binary for a wire front-end, Python values for the next step of a flow.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from v2serve.data.decode import inputs_from_data
from v2serve.data.fetch import DataFetcher
from v2serve.errors import (
    Forbidden,
    InferenceError,
    InvalidRequest,
    NotImplementedOperation,
    OperationNotFound,
    V2ServeError,
)
from v2serve.models.base import Model, RequestContext
from v2serve.models.outputs import as_output_dict
from v2serve.models.registry import ModelEntry, ModelRegistry, ModelState
from v2serve.protocol.binary import HEADER_LENGTH
from v2serve.protocol.bodies import decode_body
from v2serve.protocol.decode import DecodedRequest, decode_dict_request, json_body, raw_body
from v2serve.protocol.jsonio import loads
from v2serve.protocol.outputs import requested_outputs, select_outputs
from v2serve.protocol.response import InferenceResult
from v2serve.protocol.schema import ModelSchema
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
R = TypeVar("R")

UNKNOWN_OPERATION = "unknown"
"""The metric label of every operation a model does not have (and of requests that named no served model)."""


class DataPlane:
    """The v2 operations on registered models, typed: requests in, InferenceResult (numpy outputs) or a custom
    operation's value out, V2ServeError raised. It knows nothing of HTTP or streams: a front-end passes the
    request body it received (bytes, or a JSON value it decoded) and renders what comes back. Every call is
    counted in the model's statistics, its rendering (encoding) included.
    """

    def __init__(self, registry: ModelRegistry, *, debug: bool = False, data: DataFetcher | None = None) -> None:
        self.registry = registry
        self._debug = debug
        self._data = data

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
        operation: str,
        body: Any,
        headers: Mapping[str, str],
        render: Callable[[InferenceResult], R],
        event_id: str | None = None,
    ) -> R:
        """Run ``operation`` (infer, infer_dict or explain) on a request body and return ``render(result)``;
        ``render`` (encoding, for a wire front-end) is timed as the request's encode step."""
        started = time.perf_counter_ns()
        status = 500
        entry.enter()
        try:
            entry.require_ready()
            if entry.invoker.streams:
                raise InvalidRequest(
                    f"model {entry.name!r} streams its responses: use generate_stream (server-sent events) or "
                    "TorchServe's /predictions (chunked)"
                )
            parsing = time.perf_counter_ns()
            parsed, runs = json_body(body, headers), operation
            parsed_ns = time.perf_counter_ns() - parsing
            if type(parsed) is dict and "data_url" in parsed:
                # The file's rows are already ordered: infer_dict is plain infer now.
                parsed, runs = await self._with_data(entry.schema, parsed, operation)
            decoded = self._decode(entry, runs, body, headers, parsed, parsed_ns)
            # infer_decoded's steps inline: one coroutine less per request.
            context, wanted, deadline = self._prepare(entry, decoded, headers, event_id)
            try:
                produced = await entry.scheduler.submit(decoded.inputs, context, deadline, explain=runs == "explain")
            except V2ServeError:
                raise
            except Exception as exc:
                raise self._model_failed(entry, exc) from exc
            result = self._result(entry, produced, wanted, context)
            encoding = time.perf_counter_ns()
            rendered = render(result)
            entry.stats.encoded(time.perf_counter_ns() - encoding)
            status = 200
            return rendered
        except V2ServeError as exc:
            status = exc.status_code
            raise
        finally:
            entry.leave()
            entry.stats.finished(started, operation, status, inference=True)

    async def infer_decoded(
        self,
        entry: ModelEntry,
        decode: Callable[[ModelSchema], DecodedRequest],
        *,
        explain: bool = False,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
    ) -> InferenceResult:
        """Run the inputs ``decode`` builds against the model's schema (a front-end's own body format, or a
        typed one such as gRPC's) through the model's scheduler; the outputs the request asked for. Counted,
        decoding included, and checked for readiness as ``infer`` is."""
        started = time.perf_counter_ns()
        status = 500
        entry.enter()
        try:
            entry.require_ready()
            decoded = self._decode_with(entry, decode, explain)
            context, wanted, deadline = self._prepare(entry, decoded, headers or {}, event_id)
            submitted = entry.scheduler.submit(decoded.inputs, context, deadline, explain=explain)
            result = self._result(entry, await self._guarded(entry, submitted), wanted, context)
            result.lone = decoded.lone
            status = 200
            return result
        except V2ServeError as exc:
            status = exc.status_code
            raise
        finally:
            entry.leave()
            entry.stats.finished(started, "explain" if explain else "infer", status, inference=True)

    async def stream(
        self,
        entry: ModelEntry,
        decode: Callable[[ModelSchema], DecodedRequest],
        *,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
    ) -> AsyncGenerator[InferenceResult, None]:
        """The responses of a streaming model (one whose predict is a generator), each as soon as the model
        yields it; a model that does not stream gives its one response.

        Everything that can fail before the model's first item (decoding, readiness, the queue, the model
        raising at once) raises here, so that a front-end can still answer with an error status; a failure
        after that ends the iterator with the error. Close the iterator (``aclose``) to stop the model.
        """
        if not entry.invoker.streams:
            result = await self.infer_decoded(entry, decode, headers=headers, event_id=event_id)
            return _one(result)
        started = time.perf_counter_ns()
        entry.enter()
        try:
            entry.require_ready()
            decoded = self._decode_with(entry, decode, False)
            context, wanted, deadline = self._prepare(entry, decoded, headers or {}, event_id)
            items = entry.scheduler.stream(decoded.inputs, context, deadline)
            first = await self._guarded(entry, anext(items, _END))
        except BaseException as exc:
            entry.leave()
            status = exc.status_code if isinstance(exc, V2ServeError) else 500
            entry.stats.finished(started, "infer", status, inference=True)
            raise
        return self._rest_of_stream(entry, items, first, wanted, context, started, decoded.lone)

    async def _rest_of_stream(
        self,
        entry: ModelEntry,
        items: AsyncGenerator[Any, None],
        first: Any,
        wanted: dict[str, bool] | None,
        context: RequestContext,
        started: int,
        lone: bool,
    ) -> AsyncGenerator[InferenceResult, None]:
        status = 500
        try:
            item = first
            while item is not _END:
                result = self._result(entry, item, wanted, context)
                result.lone = lone
                yield result
                item = await self._guarded(entry, anext(items, _END))
            status = 200
        except V2ServeError as exc:
            status = exc.status_code
            raise
        except GeneratorExit:
            status = 499  # the consumer went away (nginx's "client closed request"); the model is stopped
            raise
        finally:
            await items.aclose()
            entry.leave()
            entry.stats.finished(started, "infer", status, inference=True)

    def _prepare(
        self, entry: ModelEntry, decoded: DecodedRequest, headers: Mapping[str, str], event_id: str | None
    ) -> tuple[RequestContext, dict[str, bool] | None, float | None]:
        request = decoded.request
        wanted = requested_outputs(entry.schema, request, decoded.all_binary_outputs)
        context = RequestContext(
            id=request.id if request.id is not None else (event_id or uuid.uuid4().hex),
            parameters=request.parameters,
            input_parameters={tensor.name: tensor.parameters for tensor in request.inputs},
            requested_outputs=None if wanted is None else list(wanted),
            headers=headers,
        )
        return context, wanted, _deadline(entry.model, request)

    def _result(
        self, entry: ModelEntry, produced: Any, wanted: dict[str, bool] | None, context: RequestContext
    ) -> InferenceResult:
        produced = as_output_dict(entry.model, produced)
        finalize = entry.invoker.finalize
        if finalize is not None:
            produced = finalize(produced, context)
        outputs = select_outputs(entry.schema, produced, wanted)
        return InferenceResult(entry.model.name, entry.model.version, context.id, outputs)

    async def custom(
        self, entry: ModelEntry, operation: str, body: Any, headers: Mapping[str, str], event_id: str | None = None
    ) -> Any:
        """The value the model's ``op_<operation>`` returns for ``body`` (bytes are parsed as JSON first)."""
        method = entry.invoker.operation(operation)

        def prepare() -> Callable[[], Awaitable[Any]]:
            if method is None:
                raise OperationNotFound(
                    f"model {entry.name!r} has no operation {operation!r}; "
                    "operations: infer, infer_dict, explain, ready and its op_<name> methods"
                )
            value = body
            if isinstance(body, bytes | bytearray | memoryview):
                value = loads(body) if len(body) else None
            context = RequestContext(id=event_id or uuid.uuid4().hex, headers=headers)
            return lambda: entry.invoker.run(method, value, context)

        # Operation names come from clients: only the model's own ones become metric labels.
        return await self._counted(entry, operation if method else UNKNOWN_OPERATION, False, prepare)

    async def document(
        self, entry: ModelEntry, operation: str, body: Any, headers: Mapping[str, str], event_id: str | None = None
    ) -> Any:
        """infer or explain on a model that takes documents (MLRun's classes): the body as it was sent (JSON,
        or the bytes or text of a body that is not JSON, as ``inputs``), the model's answer as it returns it.
        Counted like ``infer``."""

        def prepare() -> Callable[[], Awaitable[Any]]:
            method = entry.invoker.document
            if method is None:
                raise InvalidRequest(f"model {entry.name!r} takes tensors, not documents")
            document = document_of(body, headers)
            return lambda: entry.invoker.run(method, operation, document, event_id)

        return await self._counted(entry, operation, True, prepare)

    async def _counted(
        self, entry: ModelEntry, label: str, inference: bool, prepare: Callable[[], Callable[[], Awaitable[Any]]]
    ) -> Any:
        """A call on a ready model that is not a tensor operation: ``prepare`` checks the request and gives the
        call, which runs under the model's scheduler bound (instances, queue); model failures typed, the
        request counted under ``label`` (``infer`` and ``infer_decoded`` keep this inline: the hot path)."""
        started = time.perf_counter_ns()
        status = 500
        entry.enter()
        try:
            entry.require_ready()
            run = prepare()
            value = await self._guarded(entry, entry.scheduler.call(run))
            status = 200
            return value
        except V2ServeError as exc:
            status = exc.status_code
            raise
        finally:
            entry.leave()
            entry.stats.finished(started, label, status, inference=inference)

    def _decode_with(
        self, entry: ModelEntry, decode: Callable[[ModelSchema], DecodedRequest], explain: bool
    ) -> DecodedRequest:
        if explain and type(entry.model).explain is Model.explain:
            raise NotImplementedOperation(f"model {entry.name!r} does not implement explain")
        started = time.perf_counter_ns()
        try:
            decoded = decode(entry.schema)
        except (ValueError, MemoryError, RecursionError) as exc:
            raise InvalidRequest(f"the request's tensors cannot be decoded: {type(exc).__name__}: {exc}") from None
        entry.stats.decoded(time.perf_counter_ns() - started)
        return decoded

    def _decode(
        self, entry: ModelEntry, operation: str, body: Any, headers: Mapping[str, str], parsed: Any, parsed_ns: int
    ) -> DecodedRequest:
        """``parsed``: the request's JSON, or None for a binary-extension body; decoding is timed with the
        ``parsed_ns`` its parsing took."""
        if operation == "explain" and type(entry.model).explain is Model.explain:
            raise NotImplementedOperation(f"model {entry.name!r} does not implement explain")
        started = time.perf_counter_ns()
        try:
            if operation == "infer_dict":
                decoded = decode_dict_request(entry.schema, parsed)
            else:
                decoded = decode_body(entry.schema, body, headers, parsed)
        except (ValueError, MemoryError, RecursionError) as exc:
            # What the checks before numpy let through (a shape numpy cannot hold, data too deep or too big
            # to convert) is still the request's fault, not the server's.
            raise InvalidRequest(f"the request's tensors cannot be decoded: {type(exc).__name__}: {exc}") from None
        entry.stats.decoded(time.perf_counter_ns() - started + parsed_ns)
        return decoded

    async def _with_data(self, schema: ModelSchema, body: dict[str, Any], operation: str) -> tuple[dict[str, Any], str]:
        """The request with the inputs its ``data_url`` names in place of the URL, and the operation to run."""
        if self._data is None:
            raise Forbidden("data_url is not enabled on this server")
        url = body["data_url"]
        inputs = inputs_from_data(url, await self._data.read(url), schema)
        body = {**{k: v for k, v in body.items() if k != "data_url"}, "inputs": inputs}
        return body, "explain" if operation == "explain" else "infer"

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


def document_of(body: Any, headers: Mapping[str, str]) -> Any:
    """A request document as it was sent: JSON as JSON, the bytes or text of a body that is not JSON as
    ``{"inputs": ...}`` (MLRun's rule)."""
    if not isinstance(body, bytes | bytearray | memoryview):
        return body
    if HEADER_LENGTH in headers:
        raise InvalidRequest("this model takes JSON or raw bodies, not the binary tensor extension")
    content_type = headers.get("content-type")
    raw = None if content_type is None else raw_body(content_type, body)
    return loads(body) if raw is None else {"inputs": raw.data}


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

"""The v2 operations on one model: infer, infer_dict, explain and custom operations.

Each turns an Event into numpy inputs (checked against the model's metadata), runs the model through its
invoker (off the event loop) and encodes the outputs, JSON or binary as the request asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable
from typing import Any

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
from v2serve.event import Event, Reply
from v2serve.models.base import Model, RequestContext
from v2serve.models.outputs import as_output_dict
from v2serve.models.registry import ModelEntry
from v2serve.protocol.decode import DecodedRequest, decode_dict_request, decode_request, json_body
from v2serve.protocol.jsonio import loads
from v2serve.protocol.outputs import requested_outputs, select_outputs
from v2serve.protocol.response import encode_inference_response
from v2serve.protocol.schema import ModelSchema
from v2serve.protocol.types import InferenceRequest

logger = logging.getLogger("v2serve.inference")

TENSOR_OPERATIONS = ("infer", "infer_dict", "explain")
"""Operations on tensors, counted in the model's statistics; the others are custom operations."""
UNKNOWN_OPERATION = "unknown"
"""The metric label of every operation a model does not have (and of requests that named no served model)."""


class ModelOperations:
    """Runs v2 operations against registered models."""

    def __init__(self, *, debug: bool = False, data: DataFetcher | None = None) -> None:
        self._debug = debug
        self._data = data

    async def run(self, entry: ModelEntry, operation: str, event: Event) -> Reply:
        inference = operation in TENSOR_OPERATIONS
        started = time.perf_counter_ns()
        status = 500
        entry.enter()
        try:
            entry.require_ready()
            if inference:
                parsing = time.perf_counter_ns()
                body, runs = json_body(event.body, event.headers), operation
                parsed_ns = time.perf_counter_ns() - parsing
                if type(body) is dict and "data_url" in body:
                    # The file's rows are already ordered: infer_dict is plain infer now.
                    body, runs = await self._with_data(entry.schema, body, operation)
                decoded = self._decode_operation(entry, runs, event, body, parsed_ns)
                reply = await self._infer(entry, event, decoded, explain=runs == "explain")
            else:
                reply = await self._custom(entry, operation, event)
            status = reply.status
            return reply
        except V2ServeError as exc:
            status = exc.status_code
            raise
        finally:
            entry.leave()
            # Operation names come from clients: only the model's own ones become metric labels.
            if not inference and entry.invoker.operation(operation) is None:
                operation = UNKNOWN_OPERATION
            entry.stats.finished(started, operation, status, inference=inference)

    def _decode_operation(
        self, entry: ModelEntry, operation: str, event: Event, body: Any, parsed_ns: int
    ) -> DecodedRequest:
        """``body``: the request's JSON, already parsed, or None for a binary-extension body; decoding is
        timed with the ``parsed_ns`` its parsing took."""
        model = entry.model
        if operation == "explain" and type(model).explain is Model.explain:
            raise NotImplementedOperation(f"model {entry.name!r} does not implement explain")
        started = time.perf_counter_ns()
        try:
            if operation == "infer_dict":
                decoded = decode_dict_request(entry.schema, body)
            else:
                decoded = decode_request(entry.schema, event.body, event.headers, body)
        except (ValueError, MemoryError, RecursionError) as exc:
            # What the checks before numpy let through (a shape numpy cannot hold, data too deep or too big
            # to convert) is still the request's fault, not the server's.
            raise InvalidRequest(f"the request's tensors cannot be decoded: {type(exc).__name__}: {exc}") from None
        entry.stats.decoded(time.perf_counter_ns() - started + parsed_ns)
        return decoded

    # ------------------------------------------------------------ running

    async def _infer(
        self,
        entry: ModelEntry,
        event: Event,
        decoded: DecodedRequest,
        explain: bool,
    ) -> Reply:
        model, request = entry.model, decoded.request
        wanted = requested_outputs(entry.schema, request, decoded.all_binary_outputs)
        context = RequestContext(
            id=request.id if request.id is not None else (event.id or uuid.uuid4().hex),
            parameters=request.parameters,
            input_parameters={tensor.name: tensor.parameters for tensor in request.inputs},
            requested_outputs=None if wanted is None else list(wanted),
            headers=event.headers,
        )
        deadline = _deadline(entry.model, request)
        try:
            result = await entry.scheduler.submit(decoded.inputs, context, deadline, explain=explain)
        except V2ServeError:
            raise
        except Exception as exc:
            raise self._model_failed(entry, exc) from exc
        outputs = select_outputs(entry.schema, as_output_dict(model, result), wanted)
        started = time.perf_counter_ns()
        encoded = encode_inference_response(
            model_name=model.name, model_version=model.version, request_id=context.id, outputs=outputs
        )
        entry.stats.encoded(time.perf_counter_ns() - started)
        return Reply(200, encoded.body, encoded.content_type, encoded.headers)

    async def _with_data(self, schema: ModelSchema, body: dict[str, Any], operation: str) -> tuple[dict[str, Any], str]:
        """The request with the inputs its ``data_url`` names in place of the URL, and the operation to run."""
        if self._data is None:
            raise Forbidden("data_url is not enabled on this server")
        url = body["data_url"]
        inputs = inputs_from_data(url, await self._data.read(url), schema)
        body = {**{k: v for k, v in body.items() if k != "data_url"}, "inputs": inputs}
        return body, "explain" if operation == "explain" else "infer"

    async def _custom(self, entry: ModelEntry, operation: str, event: Event) -> Reply:
        method = entry.invoker.operation(operation)
        if method is None:
            raise OperationNotFound(
                f"model {entry.name!r} has no operation {operation!r}; "
                "operations: infer, infer_dict, explain, ready and its op_<name> methods"
            )
        body = event.body
        if isinstance(body, bytes | bytearray | memoryview):
            body = loads(body) if len(body) else None
        context = RequestContext(id=event.id or uuid.uuid4().hex, headers=event.headers)
        result = await self._guarded(entry, entry.invoker.run(method, body, context))
        return Reply.json(result)

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

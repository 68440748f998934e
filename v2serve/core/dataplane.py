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
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from v2serve.models.base import Model, RequestContext, Tensors
from v2serve.models.outputs import as_output_dict
from v2serve.models.registry import ModelEntry
from v2serve.models.schema import ModelSchema
from v2serve.models.tabular import ordered_rows, tabular_schema
from v2serve.protocol import binary
from v2serve.protocol.codec import decode_binary_tensor, decode_json_tensor, element_count
from v2serve.protocol.datatypes import WIRE_ITEMSIZE, datatype_of
from v2serve.protocol.jsonio import loads
from v2serve.protocol.request_json import loads_inference_request
from v2serve.protocol.response import OutputTensor, encode_inference_response
from v2serve.protocol.types import InferenceRequest, RequestInput, TensorSpec, parse_inference_request

logger = logging.getLogger("v2serve.inference")

TENSOR_OPERATIONS = ("infer", "infer_dict", "explain")
"""Operations on tensors, counted in the model's statistics; the others are custom operations."""
UNKNOWN_OPERATION = "unknown"
"""The metric label of every operation a model does not have (and of requests that named no served model)."""


@dataclass(slots=True)
class DecodedRequest:
    request: InferenceRequest
    inputs: Tensors
    all_binary_outputs: bool = False


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
                body, runs = _json_body(event), operation
                parsed_ns = time.perf_counter_ns() - parsing
                if type(body) is dict and "data_url" in body:
                    # The file's rows are already ordered: infer_dict is plain infer now.
                    body, runs = await self._with_data(entry.model, body, operation)
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
                decoded = self._decode_dict(model, entry.schema, body)
            else:
                decoded = self._decode(model, entry.schema, event, body)
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
        wanted = _requested_outputs(model, request, decoded.all_binary_outputs)
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
        outputs = _select_outputs(model, entry.schema, as_output_dict(model, result), wanted)
        started = time.perf_counter_ns()
        encoded = encode_inference_response(
            model_name=model.name, model_version=model.version, request_id=context.id, outputs=outputs
        )
        entry.stats.encoded(time.perf_counter_ns() - started)
        return Reply(200, encoded.body, encoded.content_type, encoded.headers)

    async def _with_data(self, model: Model, body: dict[str, Any], operation: str) -> tuple[dict[str, Any], str]:
        """The request with the inputs its ``data_url`` names in place of the URL, and the operation to run."""
        if self._data is None:
            raise Forbidden("data_url is not enabled on this server")
        url = body["data_url"]
        inputs = inputs_from_data(url, await self._data.read(url), model)
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

    # ------------------------------------------------------------ decoding

    def _decode(self, model: Model, schema: ModelSchema, event: Event, parsed: Any) -> DecodedRequest:
        body = event.body
        header_value = event.headers.get(binary.HEADER_LENGTH)
        # Only a byte body with the binary header arrives unparsed (``parsed`` None); anything else is JSON.
        if header_value is None or not isinstance(body, bytes | bytearray | memoryview):
            request = parse_inference_request(parsed)
            return DecodedRequest(request, _decode_inputs(model, schema, request, None))
        header_length = binary.parse_header_length(header_value, len(body))
        view = memoryview(body)
        if header_length == 0:
            return _decode_raw_binary(model, view)
        request = parse_inference_request(loads_inference_request(view[:header_length]))
        slices = binary.slice_binary_inputs(request, view[header_length:])
        return DecodedRequest(request, _decode_inputs(model, schema, request, slices))

    def _decode_dict(self, model: Model, schema: ModelSchema, obj: Any) -> DecodedRequest:
        """Dict rows become the model's single 2-D input, columns in ``feature_names`` order."""
        if not isinstance(obj, dict) or "inputs" not in obj:
            raise InvalidRequest("infer_dict needs a JSON object with 'inputs': a row object or a list of them")
        spec, features = tabular_schema(model)
        rows = obj["inputs"] if isinstance(obj["inputs"], list) else [obj["inputs"]]
        tensor = {
            "name": spec.name,
            "datatype": spec.datatype,
            "shape": [len(rows), len(features)],
            "data": ordered_rows(rows, features),
        }
        request = parse_inference_request({**obj, "inputs": [tensor]})
        return DecodedRequest(request, _decode_inputs(model, schema, request, None))


def _json_body(event: Event) -> Any:
    """The request's JSON document, parsed once; None when the body uses the binary extension (its JSON
    header is parsed with the binary data it describes)."""
    body = event.body
    if not isinstance(body, bytes | bytearray | memoryview):
        return body  # the transport decoded it already
    if binary.HEADER_LENGTH in event.headers:
        return None
    return loads_inference_request(body)


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


def _decode_inputs(
    model: Model, schema: ModelSchema, request: InferenceRequest, slices: dict[str, memoryview] | None
) -> Tensors:
    """``slices``: the binary data of the inputs that came in the binary extension, by name."""
    specs = schema.inputs
    inputs: Tensors = {}
    for tensor in request.inputs:
        if specs:
            _check_against_spec(model, tensor, specs)
        buffer = None if slices is None else slices.get(tensor.name)
        inputs[tensor.name] = decode_json_tensor(tensor) if buffer is None else decode_binary_tensor(tensor, buffer)
    if len(inputs) != len(specs) and specs:
        missing = [name for name in specs if name not in inputs]
        raise InvalidRequest(f"model {model.name!r} needs input(s) {missing}, which the request lacks")
    return inputs


def _check_against_spec(model: Model, tensor: RequestInput, specs: dict[str, TensorSpec]) -> None:
    spec = specs.get(tensor.name)
    if spec is None:
        raise InvalidRequest(f"model {model.name!r} has no input {tensor.name!r}; its inputs are {list(specs)}")
    if spec.datatype != tensor.datatype:
        raise InvalidRequest(f"input {tensor.name!r} must be {spec.datatype}, but the request says {tensor.datatype}")
    if not _shape_fits(tensor.shape, spec.shape):
        raise InvalidRequest(
            f"input {tensor.name!r} has shape {tensor.shape}, but model {model.name!r} expects {spec.shape}"
        )


def _shape_fits(shape: list[int], spec_shape: list[int]) -> bool:
    if len(shape) != len(spec_shape):
        return False
    # A plain loop, non-strict zip, equality first: this runs for every input of every request, and a
    # generator (or zip's strict check) costs more than the comparison itself.
    for dim, expected in zip(shape, spec_shape):  # noqa: B905, SIM110
        if expected != dim and expected != -1:
            return False
    return True


def _decode_raw_binary(model: Model, body: memoryview) -> DecodedRequest:
    """Inference-Header-Content-Length 0: the body is the raw data of the model's only input, batch 1."""
    if len(model.inputs) != 1:
        raise InvalidRequest(
            f"a raw binary request needs a model with exactly one declared input; "
            f"{model.name!r} has {len(model.inputs)}"
        )
    spec = model.inputs[0]
    if sum(dim == -1 for dim in spec.shape) > 1 and spec.datatype != "BYTES":
        raise InvalidRequest(
            f"a raw binary request needs input {spec.name!r} to have at most one "
            f"variable dimension; it has shape {spec.shape}"
        )
    if spec.datatype == "BYTES":
        tensor = RequestInput(spec.name, [1 if d == -1 else d for d in spec.shape], "BYTES")
        if element_count(tensor.shape) != 1:
            raise InvalidRequest(f"a raw binary BYTES request needs input {spec.name!r} of shape [1]")
        array = np.empty(1, dtype=object)
        array[0] = bytes(body)
        inputs = {spec.name: array.reshape(tensor.shape)}
    else:
        tensor = RequestInput(spec.name, _solve_shape(spec, len(body)), spec.datatype)
        inputs = {spec.name: decode_binary_tensor(tensor, body)}
    return DecodedRequest(InferenceRequest([tensor]), inputs, all_binary_outputs=True)


def _solve_shape(spec: TensorSpec, nbytes: int) -> list[int]:
    itemsize = WIRE_ITEMSIZE[spec.datatype]
    known = element_count([d for d in spec.shape if d != -1])
    if nbytes % (itemsize * max(known, 1)):
        raise InvalidRequest(
            f"a raw body of {nbytes} bytes does not fill input {spec.name!r} of shape {spec.shape} ({spec.datatype})"
        )
    free = nbytes // itemsize // max(known, 1)
    return [free if d == -1 else d for d in spec.shape]


# ---------------------------------------------------------------- outputs


def _requested_outputs(model: Model, request: InferenceRequest, all_binary: bool) -> dict[str, bool] | None:
    """Requested output names mapped to whether each goes binary; None means every output."""
    default_binary = all_binary or bool(request.parameters.get("binary_data_output", False))
    if request.outputs is None:
        return None if not default_binary else {"*": True}
    declared = {spec.name for spec in model.outputs}
    wanted: dict[str, bool] = {}
    for output in request.outputs:
        if declared and output.name not in declared:
            raise InvalidRequest(
                f"model {model.name!r} has no output {output.name!r}; its outputs are {sorted(declared)}"
            )
        wanted[output.name] = all_binary or bool(output.parameters.get("binary_data", default_binary))
    return wanted


def _select_outputs(
    model: Model, schema: ModelSchema, produced: dict[str, np.ndarray], wanted: dict[str, bool] | None
) -> list[OutputTensor]:
    datatypes = schema.output_datatypes
    if wanted is None or "*" in wanted:
        binary_all = wanted is not None
        selection = {name: binary_all for name in produced}
    else:
        absent = [name for name in wanted if name not in produced]
        if absent:
            raise InvalidRequest(f"model {model.name!r} produced no output {absent}; it produced {list(produced)}")
        selection = wanted
    outputs = []
    for name, is_binary in selection.items():
        array = produced[name]
        try:
            datatype = datatypes.get(name) or datatype_of(array)
        except TypeError as exc:
            raise InferenceError(f"model {model.name!r} output {name!r}: {exc}") from None
        outputs.append(OutputTensor(name, array, datatype, is_binary))
    return outputs

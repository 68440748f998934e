"""A request's tensors from the wire into numpy, checked against the model's schema.

One entry per body kind: ``decode_request`` for v2 JSON, the binary extension and raw binary bodies, and
``decode_dict_request`` for ``infer_dict`` rows (``bodies.decode_body`` adds MLRun's data points and raw
bodies on top). Shapes and datatypes are checked against the schema before
any data is converted, and element counts against the bytes present before anything is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from v2serve.errors import InvalidRequest
from v2serve.protocol import binary
from v2serve.protocol.body import Body
from v2serve.protocol.codec import decode_binary_tensor, decode_json_tensor, element_count
from v2serve.protocol.datatypes import WIRE_ITEMSIZE
from v2serve.protocol.request_json import loads_inference_request
from v2serve.protocol.schema import ModelSchema
from v2serve.protocol.tabular import ordered_rows, tabular_schema
from v2serve.protocol.types import InferenceRequest, RequestInput, TensorSpec, parse_inference_request

Tensors = dict[str, np.ndarray]


@dataclass(slots=True)
class DecodedRequest:
    request: InferenceRequest
    inputs: Tensors
    all_binary_outputs: bool = False
    """A raw binary request: every output goes back binary."""
    lone: bool = False
    """The request was one data point, not a batch: a front-end that answers per point answers with the
    first row alone (TorchServe's body for one input)."""
    parse_ns: int = 0
    """Time spent parsing the body before the decoding ran (a front-end that had to look into it first):
    counted in the request's decode time with the decoding itself."""


def request_document(body: Body) -> Any:
    """The request's JSON document (parsed once, tensor data into numpy); None when the body uses the binary
    extension (its JSON header is parsed with the binary data it describes); a RawBody when its content type
    says it is not JSON."""
    if body.binary_extension:
        return None
    raw = body.raw_body()
    return body.inference_json() if raw is None else raw


def decode_request(schema: ModelSchema, body: Body) -> DecodedRequest:
    """A request's tensors (v2 JSON, or the binary extension), checked against ``schema`` and decoded."""
    if body.binary_extension:
        return decode_binary_request(schema, body)
    return decode_json_request(schema, body.inference_json())


def decode_json_request(schema: ModelSchema, document: Any) -> DecodedRequest:
    """A v2 JSON request's tensors, checked against ``schema`` and decoded."""
    request = parse_inference_request(document)
    return DecodedRequest(request, decode_tensors(schema, request, None))


def decode_binary_request(schema: ModelSchema, body: Body) -> DecodedRequest:
    """A binary-extension request's tensors: its JSON header, and the data each binary input's slice holds."""
    assert body.header_length is not None
    header_length = binary.parse_header_length(body.header_length, len(body.raw))
    view = memoryview(body.raw)
    if header_length == 0:
        return _decode_raw_binary(schema, view)
    request = parse_inference_request(loads_inference_request(view[:header_length]))
    slices = binary.slice_binary_inputs(request, view[header_length:])
    return DecodedRequest(request, decode_tensors(schema, request, slices))


def decode_dict_request(schema: ModelSchema, obj: Any) -> DecodedRequest:
    """Dict rows become the model's single 2-D input, columns in ``feature_names`` order."""
    if not isinstance(obj, dict) or "inputs" not in obj:
        raise InvalidRequest("infer_dict needs a JSON object with 'inputs': a row object or a list of them")
    spec, features = tabular_schema(schema)
    rows = obj["inputs"] if isinstance(obj["inputs"], list) else [obj["inputs"]]
    tensor = {
        "name": spec.name,
        "datatype": spec.datatype,
        "shape": [len(rows), len(features)],
        "data": ordered_rows(rows, features),
    }
    request = parse_inference_request({**obj, "inputs": [tensor]})
    return DecodedRequest(request, decode_tensors(schema, request, None))


def decode_tensors(schema: ModelSchema, request: InferenceRequest, slices: dict[str, memoryview] | None) -> Tensors:
    """A request's inputs, each checked against ``schema`` and decoded. ``slices``: the binary data of the
    inputs that came in the binary extension, by name."""
    specs = schema.inputs
    inputs: Tensors = {}
    for tensor in request.inputs:
        if specs:
            # check_tensor's checks, inline (it runs only to say what is wrong): this runs for every input.
            spec = specs.get(tensor.name)
            if spec is None or spec.datatype != tensor.datatype or not shape_fits(tensor.shape, spec.shape):
                check_tensor(schema, tensor, specs)
        buffer = None if slices is None else slices.get(tensor.name)
        inputs[tensor.name] = decode_json_tensor(tensor) if buffer is None else decode_binary_tensor(tensor, buffer)
    if len(inputs) != len(specs) and specs:
        missing = [name for name, spec in specs.items() if name not in inputs and not spec.optional]
        if missing:
            raise InvalidRequest(f"model {schema.name!r} needs input(s) {missing}, which the request lacks")
    return inputs


def check_tensor(schema: ModelSchema, tensor: RequestInput, specs: dict[str, TensorSpec]) -> None:
    """A tensor's name, datatype and shape against the model's input ``specs``; InvalidRequest otherwise."""
    spec = specs.get(tensor.name)
    if spec is None:
        raise InvalidRequest(f"model {schema.name!r} has no input {tensor.name!r}; its inputs are {list(specs)}")
    if spec.datatype != tensor.datatype:
        raise InvalidRequest(f"input {tensor.name!r} must be {spec.datatype}, but the request says {tensor.datatype}")
    if not shape_fits(tensor.shape, spec.shape):
        raise InvalidRequest(
            f"input {tensor.name!r} has shape {tensor.shape}, but model {schema.name!r} expects {spec.shape}"
        )


def shape_fits(shape: list[int], spec_shape: list[int]) -> bool:
    """Whether ``shape`` fits a spec's shape (-1: any size)."""
    if len(shape) != len(spec_shape):
        return False
    # A plain loop, non-strict zip, equality first: this runs for every input of every request, and a
    # generator (or zip's strict check) costs more than the comparison itself.
    for dim, expected in zip(shape, spec_shape):  # noqa: B905, SIM110
        if expected != dim and expected != -1:
            return False
    return True


def _decode_raw_binary(schema: ModelSchema, body: memoryview) -> DecodedRequest:
    """Inference-Header-Content-Length 0: the body is the raw data of the model's only input, batch 1."""
    if len(schema.input_list) != 1:
        raise InvalidRequest(
            f"a raw binary request needs a model with exactly one declared input; "
            f"{schema.name!r} has {len(schema.input_list)}"
        )
    spec = schema.input_list[0]
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

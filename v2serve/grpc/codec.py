"""ModelInferRequest into numpy and InferenceResult into ModelInferResponse, with no JSON in between.

``raw_input_contents`` are viewed in place by numpy (the bytes protobuf parsed, no further copy); typed
``contents`` are converted field by field, checked against the datatype's range. A request that sent raw
contents gets ``raw_output_contents`` back, one that sent typed contents gets typed contents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from v2serve.errors import InvalidRequest
from v2serve.grpc.generated import inference_pb2 as pb
from v2serve.protocol.codec import binary_data, decode_binary_tensor, element_count, to_wire_array
from v2serve.protocol.datatypes import DATATYPE_TO_NUMPY, normalize_datatype
from v2serve.protocol.decode import DecodedRequest, check_tensor, shape_fits
from v2serve.protocol.response import InferenceResult
from v2serve.protocol.schema import ModelSchema
from v2serve.protocol.types import InferenceRequest, Parameters, RequestedOutput, RequestInput

CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed-contents field of each datatype; FP16 and BF16 have none and travel as raw contents only."""


def parameters_of(parameters: Mapping[str, Any]) -> Parameters:
    """An InferParameter (or ModelRepositoryParameter) map as plain values."""
    values: Parameters = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = None if choice is None else getattr(parameter, choice)
    return values


def set_parameters(target: Any, values: Mapping[str, Any]) -> None:
    """Fill an InferParameter map from plain values (bool, int, float, str; anything else as its str)."""
    for key, value in values.items():
        parameter = target[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            if value >= 2**63:
                parameter.uint64_param = value
            else:
                parameter.int64_param = value
        elif isinstance(value, float):
            parameter.double_param = value
        else:
            parameter.string_param = value if isinstance(value, str) else str(value)


def decode_infer_request(
    schema: ModelSchema, request: pb.ModelInferRequest, raw_contents: Sequence[memoryview] | None = None
) -> DecodedRequest:
    """The request's inputs, checked against ``schema`` and decoded; ``raw_contents``: its raw input contents
    when they were taken from the wire apart from the message (``wire.split_raw_contents``)."""
    raw = request.raw_input_contents if raw_contents is None else raw_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: give one per input"
        )
    specs = schema.inputs
    tensors: list[RequestInput] = []
    arrays: dict[str, np.ndarray] = {}
    # Each field read from a protobuf message is a call into upb: every one is read once, and empty maps
    # are not walked (this runs for every input of every gRPC request).
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        shape = tensor.shape[:]  # a list; list() iterates it item by item, twice as slow
        if shape and min(shape) < 0:
            raise InvalidRequest(f"input {name!r} shape must hold non-negative integers, got {shape}")
        parameters = tensor.parameters
        described = RequestInput(name, shape, normalize_datatype(tensor.datatype), None,
                                 parameters_of(parameters) if parameters else {})  # fmt: skip
        if specs:
            # check_tensor's checks, inline as in decode_tensors: it runs only to say what is wrong.
            spec = specs.get(name)
            if spec is None or spec.datatype != described.datatype or not shape_fits(shape, spec.shape):
                check_tensor(schema, described, specs)
        if name in arrays:
            raise InvalidRequest(f"input names must be unique; {name!r} is given twice")
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequest(f"input {name!r} has contents, but the request uses raw_input_contents")
            arrays[name] = decode_binary_tensor(described, raw[index])
        else:
            arrays[name] = _typed(described, tensor.contents)
        tensors.append(described)
    if len(arrays) != len(specs) and specs:
        missing = [name for name, spec in specs.items() if name not in arrays and not spec.optional]
        if missing:
            raise InvalidRequest(f"model {schema.name!r} needs input(s) {missing}, which the request lacks")
    outputs = request.outputs
    wanted = [RequestedOutput(o.name, parameters_of(o.parameters)) for o in outputs] if outputs else None
    parameters = request.parameters
    described_request = InferenceRequest(tensors, request.id or None, parameters_of(parameters) if parameters else {},
                                         wanted)  # fmt: skip
    return DecodedRequest(described_request, arrays)


def _typed(tensor: RequestInput, contents: pb.InferTensorContents) -> np.ndarray:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidRequest(f"input {tensor.name!r} is {tensor.datatype}, which travels in raw_input_contents only")
    values = getattr(contents, field)
    count = element_count(tensor.shape)
    if len(values) != count:
        raise InvalidRequest(
            f"input {tensor.name!r} has {len(values)} values in {field} but shape {tensor.shape} needs {count}"
        )
    if tensor.datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(tensor.shape)
    dtype = DATATYPE_TO_NUMPY[tensor.datatype]
    wide = np.asarray(values)
    if dtype.kind in "iu" and wide.size:
        limits = np.iinfo(dtype)
        if wide.min() < limits.min or wide.max() > limits.max:
            raise InvalidRequest(f"input {tensor.name!r} holds values outside the range of {tensor.datatype}")
    return wide.astype(dtype, copy=False).reshape(tensor.shape)


def encode_infer_response(result: InferenceResult, *, raw: bool) -> pb.ModelInferResponse:
    """The result as a ModelInferResponse: raw_output_contents when ``raw``, typed contents otherwise (FP16
    and BF16 outputs, which have no typed field, are raw either way)."""
    response = pb.ModelInferResponse(model_name=result.model_name, model_version=result.model_version or "",
                                     id=result.id)  # fmt: skip
    typed_only = not raw and all(o.datatype in CONTENTS_FIELD for o in result.outputs)
    for output in result.outputs:
        array = to_wire_array(output.array, output.datatype)
        tensor = response.outputs.add(name=output.name, datatype=output.datatype, shape=array.shape)
        if typed_only:
            values = getattr(tensor.contents, CONTENTS_FIELD[output.datatype])
            if output.datatype == "BYTES":
                values.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1).tolist())
            else:
                values.extend(array.reshape(-1).tolist())
        else:
            response.raw_output_contents.append(binary_data(array, output.datatype))
    return response

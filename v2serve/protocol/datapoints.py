"""Inputs given as plain values rather than v2 tensors, as the other front-ends send them.

KServe v1's ``instances``, MLRun's ``inputs`` list, a TorchServe body and Triton's ``generate`` fields carry
data points without a name, datatype or shape: the model's declared inputs supply those, and the values are
decoded by the same checked codec as v2 tensors (cast to the declared datatype, never guessed when declared).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from v2serve.errors import InvalidRequest
from v2serve.protocol.codec import decode_json_tensor
from v2serve.protocol.decode import DecodedRequest, check_tensor, decode_tensors
from v2serve.protocol.jsonio import loads
from v2serve.protocol.schema import ModelSchema
from v2serve.protocol.types import InferenceRequest, Parameters, RequestInput, TensorSpec, parse_request_input

DEFAULT_INPUT = "input0"
"""The input name given to data points sent to a model that declares no inputs."""


def decode_datapoints(
    schema: ModelSchema, points: Any, parameters: Parameters | None = None, *, batch: bool = False
) -> DecodedRequest:
    """Data points as the model's single input: a list of points is a batch, one row per point, and a lone
    point (one dimension fewer than the input) is a batch of one. ``batch``: ``points`` is a list of points
    whatever its shape (KServe v1's ``instances``)."""
    spec = single_input(schema)
    shape = _shape_of(points, spec.name)
    lone = not batch and ((bool(spec.shape) and len(shape) == len(spec.shape) - 1) or not shape)
    if lone:
        points, shape = [points], [1, *shape]
    decoded = _decoded(schema, [_tensor(spec, points, shape)], parameters)
    decoded.lone = lone
    return decoded


def decode_named_values(
    schema: ModelSchema, values: Mapping[str, Any], parameters: Parameters | None = None
) -> DecodedRequest:
    """Inputs by name, each a value or a list of values (Triton's ``generate`` fields): a scalar is shape
    ``[1]``, and leading dimensions of 1 are added up to the rank the model declares."""
    tensors = []
    for name, value in values.items():
        spec = schema.inputs.get(name) or TensorSpec(name, _datatype_of(value, name), [])
        shape = _shape_of(value, name) or [1]
        data = value if isinstance(value, list) else [value]
        while len(shape) < len(spec.shape):
            shape, data = [1, *shape], [data]
        tensors.append(_tensor(spec, data, shape))
    return _decoded(schema, tensors, parameters)


def decode_fields(schema: ModelSchema, fields: Mapping[str, Sequence[bytes]], *, lone: bool = False) -> DecodedRequest:
    """Raw byte strings by input name, one row per string (a TorchServe body, the files of a form): a BYTES
    input, or one the model does not declare, takes them as they are; any other input reads each as a JSON
    data point."""
    tensors: list[RequestInput] = []
    arrays: dict[str, np.ndarray] = {}
    for name, rows in fields.items():
        spec = schema.inputs.get(name)
        if spec is None or spec.datatype == "BYTES":
            rank = len(spec.shape) if spec is not None else 1
            tensor = RequestInput(name, [len(rows), *[1] * (rank - 1)], "BYTES")
            if schema.inputs:
                check_tensor(schema, tensor, schema.inputs)
            array = np.empty(len(rows), dtype=object)
            array[:] = list(rows)
            arrays[name] = array.reshape(tensor.shape)
        else:
            points = [loads(row) for row in rows]
            tensor = parse_request_input(_tensor(spec, points, _shape_of(points, name)), len(tensors))
            check_tensor(schema, tensor, schema.inputs)
            arrays[name] = decode_json_tensor(tensor)
        tensors.append(tensor)
    missing = [name for name, spec in schema.inputs.items() if name not in arrays and not spec.optional]
    if missing:
        raise InvalidRequest(f"model {schema.name!r} needs input(s) {missing}, which the request lacks")
    return DecodedRequest(InferenceRequest(tensors), arrays, lone=lone)


def decode_rows(schema: ModelSchema, rows: Sequence[Mapping[str, Any]]) -> DecodedRequest:
    """Instances as objects of input name to value (KServe v1's and TF Serving's row format), one batch row
    each. A binary value is ``{"b64": "..."}``; a BYTES input takes text as its UTF-8 bytes. TorchServe's
    envelope (``{"data": ...}`` or ``{"body": ...}``) fills a model's single input of another name."""
    if all(_is_b64(row) for row in rows):  # each instance is a binary value of the single input
        columns: dict[str, list[Any]] = {single_input(schema).name: list(rows)}
    else:
        names = list(rows[0]) if rows else []
        columns = {name: [] for name in names}
        for index, row in enumerate(rows):
            if list(row) != names:
                raise InvalidRequest(f"instance {index} names {sorted(row)}, but instance 0 names {sorted(names)}")
            for name, value in row.items():
                columns[name].append(value)
        if len(names) == 1 and names[0] in ("data", "body") and schema.inputs and names[0] not in schema.inputs:
            columns = {single_input(schema).name: columns[names[0]]}
    fields: dict[str, Sequence[bytes]] = {}
    tensors: list[dict[str, Any]] = []
    for name, values in columns.items():
        spec = schema.inputs.get(name)
        if spec is None or spec.datatype == "BYTES" or any(_is_b64(value) for value in values):
            fields[name] = [_binary(name, value) for value in values]
        else:
            tensors.append(_tensor(spec, values, _shape_of(values, name)))
    if fields and tensors:
        raise InvalidRequest("mix binary and typed inputs as v2 tensors, not as KServe v1 instances")
    if tensors:
        return _decoded(schema, tensors, None)
    if not fields:
        raise InvalidRequest("'instances' holds no values")
    return decode_fields(schema, fields)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _binary(name: str, value: Any) -> bytes:
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise InvalidRequest(f"input {name!r}: a 'b64' value must be base64 text") from None
    if isinstance(value, str):
        return value.encode()
    raise InvalidRequest(f"input {name!r} takes bytes: text, or {{'b64': ...}} for binary data")


def single_input(schema: ModelSchema) -> TensorSpec:
    """The input that data points fill: the model's only declared one (a model that declares none takes them
    as ``input0``, its datatype read from the values)."""
    if not schema.input_list:
        return TensorSpec(DEFAULT_INPUT, "", [])
    if len(schema.input_list) > 1:
        names = [spec.name for spec in schema.input_list]
        raise InvalidRequest(
            f"data points fill a model's single input, but model {schema.name!r} has {len(names)}: {names}; "
            "send a v2 request with named tensors"
        )
    return schema.input_list[0]


def _tensor(spec: TensorSpec, data: Any, shape: list[int]) -> dict[str, Any]:
    datatype = spec.datatype or _datatype_of(data, spec.name)
    return {"name": spec.name, "datatype": datatype, "shape": shape, "data": data}


def _decoded(schema: ModelSchema, tensors: list[dict[str, Any]], parameters: Parameters | None) -> DecodedRequest:
    request = InferenceRequest([parse_request_input(t, i) for i, t in enumerate(tensors)], None, parameters or {})
    return DecodedRequest(request, decode_tensors(schema, request, None))


def _shape_of(value: Any, name: str) -> list[int]:
    try:
        return list(np.shape(value))
    except ValueError:
        raise InvalidRequest(f"the data points of input {name!r} are ragged: every point needs one shape") from None


_KIND_TO_DATATYPE = {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64", "U": "BYTES"}


def _datatype_of(value: Any, name: str) -> str:
    try:
        kind = np.asarray(value).dtype.kind
    except ValueError:
        kind = "O"
    datatype = _KIND_TO_DATATYPE.get(kind)
    if datatype is None:
        raise InvalidRequest(f"input {name!r}: the model declares no datatype and the values are not all numbers, "
                             "booleans or strings")  # fmt: skip
    return datatype

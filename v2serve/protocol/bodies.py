"""Every body a v2 infer route takes, decoded: v2 tensors (JSON or the binary extension), MLRun's data points
(``{"inputs": [f1, f2, ...]}`` or a list of them), and bodies that are not JSON (an image, bytes, text) for
a model's single input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from v2serve.errors import InvalidRequest
from v2serve.protocol.datapoints import decode_datapoints, decode_fields, single_input
from v2serve.protocol.decode import DecodedRequest, RawBody, decode_request
from v2serve.protocol.schema import ModelSchema


def decode_body(schema: ModelSchema, body: Any, headers: Mapping[str, str], parsed: Any) -> DecodedRequest:
    """``parsed``: the body as ``json_body`` gave it."""
    if type(parsed) is dict:
        inputs = parsed.get("inputs")
        # A list whose first item is not a tensor object is MLRun's list of data points.
        if type(inputs) is list and inputs and type(inputs[0]) is not dict:
            return _datapoints(schema, parsed, inputs)
    elif type(parsed) is RawBody:
        return decode_raw(schema, parsed)
    return decode_request(schema, body, headers, parsed)


def decode_raw(schema: ModelSchema, raw: RawBody) -> DecodedRequest:
    """Bytes fill the model's single input as one BYTES element; text is one data point."""
    if isinstance(raw.data, str):
        return decode_datapoints(schema, raw.data)
    spec = single_input(schema)
    if spec.datatype not in ("BYTES", ""):
        raise InvalidRequest(
            f"model {schema.name!r} takes {spec.datatype} input {spec.name!r}, not the bytes of a binary body; "
            "send JSON"
        )
    return decode_fields(schema, {spec.name: [raw.data]}, lone=True)


def _datapoints(schema: ModelSchema, document: dict[str, Any], inputs: list[Any]) -> DecodedRequest:
    parameters = document.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be an object")
    decoded = decode_datapoints(schema, inputs, parameters)
    request_id = document.get("id")
    if request_id is not None:
        if not isinstance(request_id, str):
            raise InvalidRequest(f"'id' must be a string, got {type(request_id).__name__}")
        decoded.request.id = request_id
    return decoded

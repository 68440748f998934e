"""Every body a v2 infer route takes, decoded: v2 tensors (JSON or the binary extension), MLRun's data points
(``{"inputs": [f1, f2, ...]}`` or a list of them), bodies that are not JSON (an image, bytes, text) for a
model's single input, and ``infer_dict`` rows; ``v2_decoder`` picks the decoding an operation needs."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from v2serve.errors import InvalidRequest
from v2serve.protocol.body import Body, RawBody
from v2serve.protocol.datapoints import decode_datapoints, decode_fields, single_input
from v2serve.protocol.decode import DecodedRequest, decode_binary_request, decode_dict_request, decode_tensors
from v2serve.protocol.schema import ModelSchema
from v2serve.protocol.types import parse_inference_request, parse_requested_outputs

Decoder = Callable[[ModelSchema], DecodedRequest]
"""A request's decoding against the schema of the model it reaches (run, and timed, by the data plane)."""


def v2_decoder(body: Body, operation: str) -> Decoder:
    """The decoding of a v2 request body for ``operation`` (infer, explain or infer_dict)."""
    decoding = v2_decoding(operation)
    return lambda schema: decoding(schema, body)


def v2_decoding(operation: str) -> Callable[[ModelSchema, Body], DecodedRequest]:
    """What decodes a v2 request body for ``operation``, called with the schema and the body (chosen once
    per route)."""
    return decode_dict_body if operation == "infer_dict" else decode_body


def parsed_first(body: Body, decode: Decoder) -> Decoder:
    """``decode``, with the time ``body`` took to parse before it ran (the front-end had to look into the
    request to build it) counted as decoding, as ``decode_body`` counts it."""

    def run(schema: ModelSchema) -> DecodedRequest:
        decoded = decode(schema)
        decoded.parse_ns = body.parse_ns
        return decoded

    return run


def decode_body(schema: ModelSchema, body: Body) -> DecodedRequest:
    """Any body an infer route takes: v2 tensors, MLRun's data points, or a body that is not JSON. The
    parsing a front-end did before (to route the request, or to find its data_url) counts as decoding."""
    parsed_before = body.parse_ns
    content_type = body.content_type
    raw = None
    if content_type is not None and not content_type.startswith("application/json"):
        raw = body.raw_body()
    if body.binary_extension:
        decoded = decode_binary_request(schema, body)
    elif raw is not None:
        decoded = decode_raw(schema, raw)
    else:
        document = body.inference_json()
        inputs = document.get("inputs") if type(document) is dict else None
        if type(inputs) is list and inputs and type(inputs[0]) is not dict:
            # A list whose first item is not a tensor object is MLRun's list of data points.
            decoded = _datapoints(schema, document, inputs)
        else:  # decode_json_request, inline: the hot path
            request = parse_inference_request(document)
            decoded = DecodedRequest(request, decode_tensors(schema, request, None))
    decoded.parse_ns = parsed_before
    return decoded


def decode_dict_body(schema: ModelSchema, body: Body) -> DecodedRequest:
    parsed_before = body.parse_ns
    decoded = decode_dict_request(schema, body.inference_json())
    decoded.parse_ns = parsed_before
    return decoded


def document_of(body: Body) -> Any:
    """A request document as it was sent, for a model that takes documents (MLRun's classes): JSON as JSON;
    an ``image/*`` body as MLRun's router passes it, ``{"inputs": [<a file object of its bytes>]}``; the
    bytes or text of another body that is not JSON as ``{"inputs": ...}`` (MLRun refuses those)."""
    if body.binary_extension:
        raise InvalidRequest("this model takes JSON or raw bodies, not the binary tensor extension")
    raw = body.raw_body()
    if raw is None:
        return body.json()
    if isinstance(raw.data, bytes) and (body.content_type or "").lower().startswith("image/"):
        return {"inputs": [io.BytesIO(raw.data)]}
    return {"inputs": raw.data}


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
    decoded.request.outputs = parse_requested_outputs(document.get("outputs"), names=True)
    request_id = document.get("id")
    if request_id is not None:
        if not isinstance(request_id, str):
            raise InvalidRequest(f"'id' must be a string, got {type(request_id).__name__}")
        decoded.request.id = request_id
    return decoded

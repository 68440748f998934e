"""TorchServe's inference API on the v2 port: ``/ping``, ``/predictions/{model}[/{version}]`` and
``/explanations/{model}[/{version}]``, with every method TorchServe takes there but HEAD and OPTIONS.

A model served from a TorchServe archive gets the request as TorchServe hands it to its handler
(``torchserve_handlers``). For every other model, a prediction's body is whatever the client sends
(``curl -T image.jpg`` or ``--data``, JSON, or a form of files): a BYTES input takes raw bytes as they are, a
form's fields fill the inputs they name (several files of one field are a batch), and JSON data points fill
the model's single input. The answer is the request's row (a batch: the list of rows) as JSON, or, for one
BYTES value, the bytes themselves. A model whose predict is a generator answers with HTTP/1.1 chunked
transfer, one chunk per item, as TorchServe's ``send_intermediate_predict_response`` does. Errors take
TorchServe's shape ``{"code", "type", "message"}``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import numpy as np

from v2serve.core.routes import Handler, Route, errors_rendered
from v2serve.core.server_core import ServerCore
from v2serve.errors import Conflict, InvalidRequest, ModelVersionNotFound, V2ServeError
from v2serve.event import Event, Reply
from v2serve.frontends.forms import form_fields, is_form
from v2serve.frontends.torchserve_handlers import archive_answer
from v2serve.models.base import Model
from v2serve.models.torchserve import TorchServeArchive
from v2serve.protocol.bodies import Decoder
from v2serve.protocol.body import Body
from v2serve.protocol.datapoints import decode_datapoints, decode_fields, single_input
from v2serve.protocol.decode import DecodedRequest, decode_request
from v2serve.protocol.jsonio import JSON_CONTENT_TYPE, dumps, loads
from v2serve.protocol.media import TEXT_CONTENT_TYPE
from v2serve.protocol.response import InferenceResult
from v2serve.protocol.schema import ModelSchema
from v2serve.protocol.values import rows

_EXCEPTION_TYPES = {
    400: "BadRequestException",
    404: "ModelNotFoundException",
    405: "MethodNotAllowedException",
    413: "BadRequestException",
    500: "InternalServerException",
    501: "InternalServerException",
    503: "ServiceUnavailableException",
    504: "RequestTimeoutException",
}


def torchserve_error(exc: V2ServeError) -> Reply:
    """An error in TorchServe's shape, with its status and headers."""
    status = int(exc.status_code)
    kind = getattr(exc, "torchserve_type", None) or _EXCEPTION_TYPES.get(status, "InternalServerException")
    if isinstance(exc, ModelVersionNotFound):
        kind = "ModelVersionNotFoundException"
    elif isinstance(exc, Conflict):
        kind = "ConflictStatusException"
    reply = Reply.json({"code": status, "type": kind, "message": exc.message}, status, dict(exc.headers))
    reply.error = exc
    return reply


class TorchServeEndpoints:
    """The handlers of TorchServe's routes, over the server core."""

    def __init__(self, core: ServerCore) -> None:
        self._core = core
        self._dataplane = core.dataplane

    def routes(self) -> list[Route]:
        health = {"200": _status_body("Healthy"), "500": _status_body("Some model is not ready")}
        routes = [
            Route(method, "/ping", self.ping, "Health, TorchServe style", server_level=True, responses=health,
                  documented=method == "GET")
            for method in ("GET", "POST")
        ]  # fmt: skip
        predictions = _errors_in_torchserve_shape(self.predictions)
        explanations = _errors_in_torchserve_shape(self.explanations)
        for route, handler, summary in (
            ("predictions", predictions, "Prediction"),
            ("explanations", explanations, "Explanation"),
        ):
            for prefix in (f"/{route}/{{model}}", f"/{route}/{{model}}/{{version}}"):
                # Every method that asks for something, as TorchServe takes them all (the documents' own
                # examples upload with curl -T, which sends PUT); HEAD and OPTIONS never run a model.
                routes += [
                    Route(method, prefix, handler, f"{summary}, TorchServe style ({method}: {body})",
                          request_content=_ANY_BODY, responses=_PREDICTION_RESPONSES, documented=bool(body))
                    for method, body in (("POST", "any body"), ("PUT", "curl -T"), ("GET", ""), ("DELETE", ""),
                                         ("PATCH", ""))
                ]  # fmt: skip
        return routes

    async def ping(self, event: Event, params: Mapping[str, str]) -> Reply:
        ready = self._core.readiness()["ready"]
        return Reply.json({"status": "Healthy" if ready else "Unhealthy"}, 200 if ready else 500)

    async def predictions(self, event: Event, params: Mapping[str, str]) -> Reply:
        entry = self._core.entry(params)
        if isinstance(entry.model, TorchServeArchive):
            return await archive_answer(self._dataplane, entry, event, explain=False)
        decode = _decoder(event)
        if entry.invoker.streams:
            results = await self._dataplane.stream(entry, decode, headers=event.headers, event_id=event.id)
            first = await anext(results, None)
            if first is None:
                return Reply(200, b"", entry.model.bytes_content_type)
            reply = first.encode(_renderer(entry.model))
            reply.stream = _chunks(results, entry.model)
            return reply
        result = await self._dataplane.infer(entry, decode, headers=event.headers, event_id=event.id)
        return result.encode(_renderer(entry.model))

    async def explanations(self, event: Event, params: Mapping[str, str]) -> Reply:
        entry = self._core.entry(params)
        if isinstance(entry.model, TorchServeArchive):
            return await archive_answer(self._dataplane, entry, event, explain=True)
        result = await self._dataplane.infer(
            entry, _decoder(event), explain=True, headers=event.headers, event_id=event.id
        )
        return result.encode(_renderer(entry.model))


def torchserve_routes(core: ServerCore) -> list[Route]:
    return TorchServeEndpoints(core).routes()


def _errors_in_torchserve_shape(handler: Handler) -> Handler:
    return errors_rendered(handler, torchserve_error)


_ANY_BODY = {
    "application/json": {"schema": {}},
    "multipart/form-data": {
        "schema": {"type": "object", "additionalProperties": {"type": "string", "format": "binary"}}
    },
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}
_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "integer"}, "type": {"type": "string"}, "message": {"type": "string"}},
    "required": ["code", "type", "message"],
}
_PREDICTION_RESPONSES = {
    "200": {"description": "The prediction: JSON, or the bytes a model produced", "content": {"*/*": {"schema": {}}}},
    **{
        str(status): {"description": kind, "content": {JSON_CONTENT_TYPE: {"schema": _ERROR_SCHEMA}}}
        for status, kind in _EXCEPTION_TYPES.items()
        if status != 405
    },
}


def _status_body(description: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {"description": description, "content": {JSON_CONTENT_TYPE: {"schema": schema}}}


# ---------------------------------------------------------------- request bodies


def _decoder(event: Event) -> Decoder:
    body = event.body
    content_type = body.content_type or ""
    if body.is_decoded:
        return lambda schema: _from_json(schema, body.json())  # a transport decoded it already
    raw = bytes(body.raw)
    if is_form(content_type):
        fields = form_fields(raw, content_type)
        return lambda schema: _from_form(schema, fields)
    return lambda schema: _from_body(schema, raw, content_type)


def _from_body(schema: ModelSchema, body: bytes, content_type: str) -> DecodedRequest:
    if not _is_json(content_type):
        spec = single_input(schema)
        if spec.datatype in ("BYTES", ""):
            return decode_fields(schema, {spec.name: [body]}, lone=True)
        if not _may_hold_json(content_type):
            raise InvalidRequest(
                f"model {schema.name!r} takes {spec.datatype} input {spec.name!r}: send it JSON data points "
                f"(Content-Type: application/json), not {content_type or 'a body with no content type'}"
            )
    return _from_json(schema, loads(body))


def _from_json(schema: ModelSchema, value: Any) -> DecodedRequest:
    inputs = value.get("inputs") if isinstance(value, dict) else None
    if isinstance(inputs, list) and inputs and all(isinstance(item, dict) for item in inputs):
        return decode_request(schema, Body.decoded(value))  # a v2 request, tensors named
    return decode_datapoints(schema, value)


def _from_form(schema: ModelSchema, fields: list[tuple[str, bytes]]) -> DecodedRequest:
    if not fields:
        raise InvalidRequest("the form has no fields")
    if schema.inputs and all(name in schema.inputs for name, _ in fields):
        by_input: dict[str, list[bytes]] = {}
        for name, content in fields:
            by_input.setdefault(name, []).append(content)
    else:
        by_input = {single_input(schema).name: [content for _, content in fields]}
    return decode_fields(schema, by_input, lone=all(len(rows) == 1 for rows in by_input.values()))


def _may_hold_json(content_type: str) -> bool:
    """No content type, text, or what ``curl -d`` claims: the body is read as JSON (as TorchServe's JSON
    handlers do); an explicit binary type is not."""
    media = content_type.split(";", 1)[0].strip().lower()
    return not media or media.startswith("text/") or media == "application/x-www-form-urlencoded"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


# ---------------------------------------------------------------- responses


def _renderer(model: Model) -> Callable[[InferenceResult], Reply]:
    return lambda result: _rendered(result, model)


def _rendered(result: InferenceResult, model: Model) -> Reply:
    """The request's row (a batch: its rows): one BYTES value as it is, anything else as JSON."""
    if len(result.outputs) == 1 and result.outputs[0].datatype == "BYTES" and result.outputs[0].array.size == 1:
        value = result.outputs[0].array.reshape(-1)[0]
        if isinstance(value, bytes):
            return Reply(200, value, model.bytes_content_type)
        return Reply(200, str(value).encode(), TEXT_CONTENT_TYPE)
    value = rows(result)
    if result.lone and isinstance(value, list | np.ndarray) and len(value) == 1:
        value = value[0]
    return Reply(200, dumps(value), JSON_CONTENT_TYPE)


async def _chunks(results: AsyncGenerator[InferenceResult, None], model: Model) -> AsyncGenerator[bytes, None]:
    try:
        async for result in results:
            yield result.encode(_renderer(model)).body
    finally:
        await results.aclose()

"""Triton's generate extension: ``POST .../generate`` answers one JSON object, ``.../generate_stream`` a
server-sent event per response of a streaming model (one whose predict is a generator).

The request is a JSON object whose fields are the model's inputs by name (a scalar is shape ``[1]``), plus
``parameters``; each response holds ``model_name``, ``model_version`` and the outputs by name, an output of
one element as that element.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

from pydantic import ConfigDict
from typing_extensions import TypedDict

from v2serve.core.server_core import ServerCore
from v2serve.errors import InvalidRequest, V2ServeError
from v2serve.event import Event, Reply
from v2serve.protocol.bodies import Decoder, parsed_first
from v2serve.protocol.body import Body
from v2serve.protocol.datapoints import decode_named_values
from v2serve.protocol.jsonio import dumps
from v2serve.protocol.response import InferenceResult
from v2serve.protocol.values import scalar_or_list

EVENT_STREAM = "text/event-stream"


class GenerateRequest(TypedDict, total=False):
    """Triton's ``generate``: the model's inputs by name (a value or a list of values), and ``parameters``."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    parameters: dict[str, Any]


class GenerateEndpoints:
    """The handlers of ``generate`` and ``generate_stream``."""

    def __init__(self, core: ServerCore) -> None:
        self._dataplane = core.dataplane
        self._entry = core.entry

    async def generate(self, event: Event, params: Mapping[str, str]) -> Reply:
        entry = self._entry(params)
        if entry.invoker.streams:
            raise InvalidRequest(f"model {entry.name!r} streams its responses: use generate_stream")
        result = await self._dataplane.infer(
            entry, parsed_first(event.body, _decoder(event.body)), headers=event.headers, event_id=event.id
        )
        return result.encode(lambda result: Reply.json(generated(result)))

    async def generate_stream(self, event: Event, params: Mapping[str, str]) -> Reply:
        entry = self._entry(params)
        results = await self._dataplane.stream(
            entry, parsed_first(event.body, _decoder(event.body)), headers=event.headers, event_id=event.id
        )
        return Reply(200, b"", EVENT_STREAM, {"cache-control": "no-cache"}, stream=_events(results))


def generated(result: InferenceResult) -> dict[str, Any]:
    """One response of the generate extension."""
    fields: dict[str, Any] = {"model_name": result.model_name}
    if result.model_version is not None:
        fields["model_version"] = result.model_version
    for output in result.outputs:
        fields[output.name] = scalar_or_list(output)
    return fields


async def _events(results: AsyncGenerator[InferenceResult, None]) -> AsyncGenerator[bytes, None]:
    """Server-sent events, one per response; a failure after the first is one last ``{"error"}`` event."""
    try:
        async for result in results:
            yield b"data: " + result.encode(lambda result: dumps(generated(result))) + b"\n\n"
    except V2ServeError as exc:
        yield b"data: " + dumps({"error": exc.message}) + b"\n\n"
    finally:
        await results.aclose()


def _decoder(body: Body) -> Decoder:
    document = body.json()
    if not isinstance(document, dict):
        raise InvalidRequest("a generate request is a JSON object of inputs by name (and 'parameters')")
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be an object")
    values = {name: value for name, value in document.items() if name != "parameters"}
    return lambda schema: decode_named_values(schema, values, parameters)

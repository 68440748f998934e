"""KServe's v1 protocol (TensorFlow Serving's REST shape) on the v2 port.

``GET /v1/models`` and ``/v1/models/{model}`` (``{"name", "ready"}``, 503 when not ready), ``POST
/v1/models/{model}:predict`` (``{"instances": [...]}`` or ``{"inputs": ...}`` in, ``{"predictions": [...]}``
out) and ``:explain`` (``{"explanations": ...}``); ``GET /`` also answers ``"status": "alive"``, which is
how the kserve client's v1 ``is_server_live`` asks. Errors stay ``{"error": message}``, as KServe's are.

A TorchServe archive answers through TorchServe's ``kserve`` request envelope, as TorchServe under KServe
does: the body's ``instances`` are the handler's rows, and its answers come back as ``{"predictions":
[...]}`` (``{"explanations": [...]}`` on ``:explain``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from typing_extensions import TypedDict

from v2serve.core.routes import Route
from v2serve.core.server_core import ServerCore
from v2serve.errors import InvalidRequest
from v2serve.event import Event, Reply
from v2serve.frontends.torchserve_handlers import archive_answer
from v2serve.models.torchserve import TorchServeArchive
from v2serve.protocol import schemas
from v2serve.protocol.bodies import Decoder, parsed_first
from v2serve.protocol.body import Body
from v2serve.protocol.datapoints import decode_datapoints, decode_named_values, decode_rows
from v2serve.protocol.values import rows

_ERRORS = (400, 404, 413, 500, 503, 504)


class KServeV1Request(TypedDict, total=False):
    """KServe v1: ``instances`` (one item per instance) or ``inputs`` (data points, or a batch per input)."""

    instances: list[Any]
    inputs: Any


class KServeV1Endpoints:
    """The handlers of KServe's v1 routes, over the server core."""

    def __init__(self, core: ServerCore) -> None:
        self._core = core
        self._dataplane = core.dataplane

    def routes(self) -> list[Route]:
        # The operation routes come first: "/v1/models/{model}" would also match "m:predict".
        return [
            Route("POST", "/v1/models/{model}:predict", self.predict, "Prediction, KServe v1", None,
                  KServeV1Request, _ERRORS),
            Route("POST", "/v1/models/{model}:explain", self.explain, "Explanation, KServe v1", None,
                  KServeV1Request, (*_ERRORS, 501)),
            Route("GET", "/v1/models", self.list_models, "Names of the models served, KServe v1", schemas.ModelList,
                  server_level=True),
            Route("GET", "/v1/models/{model}", self.model_ready, "Model readiness, KServe v1", schemas.ModelReadiness,
                  errors=(404, 503)),
            Route("GET", "/", self.root, "Server metadata, and liveness as KServe v1 asks", schemas.ServerMetadata,
                  server_level=True, replaces=True),
        ]  # fmt: skip

    async def root(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json({**self._core.server_metadata(), "status": "alive"})

    async def list_models(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json({"models": self._core.registry.names()})

    async def model_ready(self, event: Event, params: Mapping[str, str]) -> Reply:
        entry = self._core.entry(params)
        ready = self._core.model_readiness(entry)["ready"]
        return Reply.json({"name": entry.name, "ready": ready}, 200 if ready else 503)

    async def predict(self, event: Event, params: Mapping[str, str]) -> Reply:
        entry = self._core.entry(params)
        if isinstance(entry.model, TorchServeArchive):
            return await archive_answer(self._dataplane, entry, event, explain=False, envelope="kserve")
        result = await self._dataplane.infer(
            entry, parsed_first(event.body, _decoder(event.body)), headers=event.headers, event_id=event.id
        )
        return result.encode(lambda result: Reply.json({"predictions": rows(result)}))

    async def explain(self, event: Event, params: Mapping[str, str]) -> Reply:
        entry = self._core.entry(params)
        if isinstance(entry.model, TorchServeArchive):
            return await archive_answer(self._dataplane, entry, event, explain=True, envelope="kserve")
        result = await self._dataplane.infer(
            entry,
            parsed_first(event.body, _decoder(event.body)),
            explain=True,
            headers=event.headers,
            event_id=event.id,
        )
        return result.encode(lambda result: Reply.json({"explanations": rows(result)}))


def kserve_v1_routes(core: ServerCore) -> list[Route]:
    return KServeV1Endpoints(core).routes()


def _decoder(body: Body) -> Decoder:
    document = body.json()
    if not isinstance(document, dict) or ("instances" in document) == ("inputs" in document):
        raise InvalidRequest("a KServe v1 request is a JSON object with either 'instances' or 'inputs'")
    if "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise InvalidRequest("'instances' must be a list, one item per instance")
        if instances and all(isinstance(instance, dict) for instance in instances):
            return lambda schema: decode_rows(schema, instances)  # the row format: inputs by name
        return lambda schema: decode_datapoints(schema, instances, batch=True)
    inputs = document["inputs"]
    if isinstance(inputs, dict):
        return lambda schema: decode_named_values(schema, inputs)  # the columnar format: a batch per input
    return lambda schema: decode_datapoints(schema, inputs)

"""The v2 Open Inference Protocol as a front-end: its routes and their handlers, over the server core.

Every path of a model exists twice, as ``/v2/models/{model}/...`` and ``/v2/models/{model}/versions/{version}/
...`` (``{model}`` may also be ``name:version``). A request posted to ``/`` names its model in its body or
headers (streams, serverless); ``OPTIONS /`` is the API description (TorchServe's convention). Errors are
``{"error": message}`` with the status of their V2ServeError class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from typing_extensions import NotRequired, TypedDict

from v2serve.core.operations import BODY_OPERATIONS, Kind, canonical, kind_of
from v2serve.core.repository_api import RepositoryEndpoints
from v2serve.core.routes import Handler, Route
from v2serve.core.server_core import ServerCore
from v2serve.data.requests import document_with_data_url, with_data_url
from v2serve.engine.registry import ModelEntry
from v2serve.errors import OperationNotFound, V2ServeError
from v2serve.event import Addressed, Event, Reply, error_reply, value_reply
from v2serve.frontends.generate import EVENT_STREAM, GenerateEndpoints, GenerateRequest
from v2serve.metrics.server import PROMETHEUS_CONTENT_TYPE
from v2serve.protocol import schemas
from v2serve.protocol.bodies import document_of, v2_decoder, v2_decoding
from v2serve.protocol.body import Body
from v2serve.protocol.jsonio import JSON_CONTENT_TYPE
from v2serve.protocol.media import TEXT_CONTENT_TYPE
from v2serve.protocol.response import InferenceResult, encode_inference_response
from v2serve.protocol.types import InferenceRequest

OPENAPI_PATH = "/v2/docs/openapi.json"
_TENSOR_ERRORS = (400, 404, 413, 500, 503, 504)
_TEXT = {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}
_EVENTS = {"200": {"description": "One event per response", "content": {EVENT_STREAM: {"schema": {"type": "string"}}}}}


class InferDictRequest(TypedDict):
    """``infer_dict``: rows as objects keyed by feature name, put in the model's input order."""

    inputs: list[dict[str, Any]] | dict[str, Any]
    id: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]


def v2_reply(result: InferenceResult) -> Reply:
    """The v2 rendering of an inference result: JSON, or JSON and binary tensor data as the request asked."""
    body, content_type, headers = encode_inference_response(
        model_name=result.model_name, model_version=result.model_version, request_id=result.id, outputs=result.outputs
    )
    return Reply(200, body, content_type, headers)


class V2Endpoints:
    """The handlers of the v2 routes."""

    def __init__(self, core: ServerCore) -> None:
        self._core = core
        self._dataplane = core.dataplane
        self._generate = GenerateEndpoints(core)
        self._body_infer = self.operation(canonical("infer"))

    # ------------------------------------------------------------ model routes

    def operation(self, operation: str, named: str | None = None) -> Handler:
        """The handler of a route for one model operation; ``named``: what the route calls it (``predict``
        for ``infer``), which an MLRun-style model is told, as MLRun tells its ``preprocess``."""

        explain = operation == "explain"
        decoding = v2_decoding(operation)

        async def run(event: Event, params: Mapping[str, str]) -> Reply:
            entry = self._core.entry(params)
            kind = kind_of(entry, operation)
            if kind is Kind.TENSORS:
                body = event.body
                if body.names_data_url():
                    entry.require_ready()
                    body, runs = await with_data_url(body, operation, entry.schema, self._core.data)
                    decode = v2_decoder(body, runs)
                else:
                    # A closure rather than partial(decoding, body=body): a partial's keyword call builds a
                    # dict each time, and costs twice what the closure's frame does.
                    decode = lambda schema: decoding(schema, body)  # noqa: E731
                result = await self._dataplane.infer(entry, decode, explain, event.headers, event.id)
                return result.encode(v2_reply)
            if kind is Kind.DOCUMENT:
                value = await document_with_data_url(document_of(event.body), self._core.data)
            else:
                value = event.body.json()
            answer = await self._dataplane.call(
                entry, operation, value, headers=event.headers, event_id=event.id, named=named
            )
            return value_reply(answer)

        return run

    async def custom_operation(self, event: Event, params: Mapping[str, str]) -> Reply:
        entry = self._core.entry(params)
        value = await self._dataplane.call(
            entry, params["operation"], event.body.json(), headers=event.headers, event_id=event.id
        )
        return value_reply(value)

    async def model_metadata(self, event: Event, params: Mapping[str, str]) -> Reply:
        entry = self._core.entry(params)
        mlrun_metadata = self._mlrun_answer(entry, "mlrun_metadata")
        if mlrun_metadata is not None:
            return Reply.json(mlrun_metadata())
        return Reply.json(self._dataplane.model_metadata(entry))

    async def model_ready(self, event: Event, params: Mapping[str, str]) -> Reply:
        entry = self._core.entry(params)
        readiness = self._core.model_readiness(entry)
        ready = readiness["ready"]
        if self._mlrun_answer(entry, "mlrun_metadata") is not None:
            # MLRun's text; not ready is MLRun's "model not ready", with an honest 503 (MLRun: 408).
            text = f"Model {entry.name} is ready (event_id = {event.id or ''})" if ready else "model not ready"
            return Reply(200 if ready else 503, text.encode(), TEXT_CONTENT_TYPE, {} if ready else {"retry-after": "1"})
        return Reply.json(readiness, 200 if ready else 503, {} if ready else {"retry-after": "1"})

    def _mlrun_answer(self, entry: ModelEntry, name: str) -> Any:
        """The model's MLRun-form answer ``name`` when the server answers as MLRun's router does."""
        if self._core.info.mlrun_router is None:
            return None
        return getattr(entry.model, name, None)

    async def model_stats(self, event: Event, params: Mapping[str, str]) -> Reply:
        pinned = "version" in params or ":" in params["model"]
        entry = self._core.entry(params)
        statistics = self._dataplane.statistics(entry, every_version=not pinned)
        metrics = self._core.metrics
        if metrics is not None and metrics.peers is not None:
            # Every worker's counts of this model (or version), added up.
            total = await self._core.statistics_total()
            wanted = {(s["name"], s["version"]) for s in statistics["model_stats"]}
            statistics["model_stats"] = [s for s in total["model_stats"] if (s["name"], s["version"]) in wanted]
        return Reply.json(statistics)

    def default_operation(self, operation: str) -> Handler:
        """The handler of ``POST /v2/models/<operation>``, which names no model (MLRun's ensemble calls)."""
        handler = self.operation(BODY_OPERATIONS[operation], operation)

        async def unnamed(event: Event, params: Mapping[str, str]) -> Reply:
            return await handler(event, {"model": self._core.unnamed_model()})

        return unnamed

    async def body_routed(self, event: Event, params: Mapping[str, str]) -> Reply:
        """A request posted to ``/`` (streams, serverless): the body's ``model``, ``version`` and
        ``operation`` fields, else the ``v2-*`` headers, say what it addresses. Its reply carries what the
        body named, so that a transport can write an error record without parsing anything again."""
        try:
            fields = _fields(event.body)
        except V2ServeError as exc:
            self._core.count_unrouted(exc)
            reply = error_reply(exc)
            reply.addressed = _addressed({}, event.headers)
            return reply
        addressed = _addressed(fields, event.headers)
        try:
            target = self._body_target(addressed)
            if addressed.operation is None:
                handler = self._body_infer  # most messages: the handler built once
            else:
                handler = self.operation(target["operation"], addressed.operation)
            reply = await handler(event, target)
        except V2ServeError as exc:
            reply = error_reply(exc)
        reply.addressed = addressed
        return reply

    def _body_target(self, addressed: Addressed) -> dict[str, str]:
        """Model, version and operation as route parameters; a body that names no model goes to the only
        model, and is an error when there are several."""
        target = {
            "model": addressed.model or self._core.unnamed_model(),
            "operation": canonical(addressed.operation or "infer"),
        }
        if addressed.version is not None:
            target["version"] = addressed.version
        return target

    # ------------------------------------------------------------ server routes

    async def server_metadata(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json(self._core.server_metadata())

    async def live(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json({"live": True})

    async def ready(self, event: Event, params: Mapping[str, str]) -> Reply:
        readiness = self._core.readiness()
        return Reply.json(
            readiness, 200 if readiness["ready"] else 503, {} if readiness["ready"] else {"retry-after": "1"}
        )

    async def list_models(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json({"models": self._core.registry.listing(), **self._core.info.listing})

    async def all_stats(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json(await self._core.statistics_total())

    async def metrics_text(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply(200, await self._core.metrics_text(), PROMETHEUS_CONTENT_TYPE)

    async def openapi(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply(200, self._core.openapi(), JSON_CONTENT_TYPE)

    async def repository_index(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json(await self._repository(event).index(event))

    async def repository_load(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json(await self._repository(event).load(event, params["model"]))

    async def repository_unload(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json(await self._repository(event).unload(event, params["model"], params.get("version")))

    def _repository(self, event: Event) -> RepositoryEndpoints:
        if self._core.repository is None:
            raise OperationNotFound(f"no route for {event.method} {event.path}")
        return self._core.repository

    # ------------------------------------------------------------ the route list

    def routes(self) -> list[Route]:
        return self._server_routes() + self._model_routes()

    def _server_routes(self) -> list[Route]:
        routes = [
            Route("GET", "/", self.server_metadata, "Server metadata", schemas.ServerMetadata, server_level=True),
            Route("OPTIONS", "/", self.openapi, "This OpenAPI description", server_level=True),
            # Which model it addresses, and so which schema its body follows, is in the body itself.
            Route("POST", "/", self.body_routed, "Any operation on the model the body or v2-* headers name",
                  documented=False),
            Route("GET", "/v2", self.server_metadata, "Server metadata", schemas.ServerMetadata, server_level=True),
            Route("GET", "/v2/health", self.server_metadata, "Server metadata (MLRun's server info)",
                  schemas.ServerMetadata, server_level=True),
            Route("GET", "/v2/health/live", self.live, "Liveness", schemas.Liveness, server_level=True),
            Route("GET", "/v2/health/ready", self.ready, "Readiness", schemas.Readiness, server_level=True,
                  responses={"200": _json(_ref("Readiness")), "503": _json(_ref("Readiness"), "Not ready")}),
            Route("GET", "/v2/models", self.list_models, "Names of the models served", schemas.ModelList,
                  server_level=True),
            Route("GET", "/v2/models/stats", self.all_stats, "Statistics of every model", schemas.StatisticsBody,
                  server_level=True),
            Route("GET", "/metrics", self.metrics_text, "Prometheus metrics", responses=_TEXT, server_level=True),
            Route("GET", OPENAPI_PATH, self.openapi, "This OpenAPI description", server_level=True),
            Route("POST", "/v2/repository/index", self.repository_index, "Models in the repository and their state",
                  None, schemas.RepositoryIndexRequest, (400, 401, 404), request_required=False, server_level=True,
                  components=(schemas.RepositoryIndexEntry,),
                  responses={"200": _json({"type": "array", "items": _ref("RepositoryIndexEntry")})}),
            Route("POST", "/v2/repository/models/{model}/load", self.repository_load, "Load a model", None,
                  schemas.RepositoryModelRequest, (400, 401, 403, 404, 409, 500), request_required=False,
                  server_level=True),
        ]  # fmt: skip
        for prefix in ("/v2/repository/models/{model}", "/v2/repository/models/{model}/versions/{version}"):
            routes.append(
                Route("POST", f"{prefix}/unload", self.repository_unload, "Unload a model", None,
                      schemas.RepositoryModelRequest, (400, 401, 403, 404, 409), request_required=False,
                      server_level=True)
            )  # fmt: skip
        return routes

    def _model_routes(self) -> list[Route]:
        # MLRun's calls that name no model: the graph's default route (an ensemble) answers them.
        routes = [
            Route("POST", f"/v2/models/{operation}", self.default_operation(operation),
                  f"{operation.capitalize()} on the default route (MLRun: the ensemble)", schemas.InferenceResponse,
                  InferenceRequest, (*_TENSOR_ERRORS, 501) if operation == "explain" else _TENSOR_ERRORS)
            for operation in ("infer", "predict", "explain")
        ]  # fmt: skip
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            routes += self._routes_of_a_model(prefix)
        return routes

    def _routes_of_a_model(self, prefix: str) -> list[Route]:
        infer, infer_dict = self.operation("infer"), self.operation("infer_dict")
        predict, predict_dict = self.operation("infer", "predict"), self.operation("infer_dict", "predict_dict")
        return [
            # Model probes are answered by these routes even when a flow answers the rest: they never run it.
            Route("GET", prefix, self.model_metadata, "Model metadata", schemas.ModelMetadata, errors=(404,),
                  server_level=True),
            Route("POST", prefix, infer, "Inference (MLRun's POST to the model)", schemas.InferenceResponse,
                  InferenceRequest, _TENSOR_ERRORS),
            Route("GET", f"{prefix}/ready", self.model_ready, "Model readiness", schemas.ModelReadiness, errors=(404,),
                  server_level=True,
                  responses={"200": _json(_ref("ModelReadiness")), "404": _json(_ref("ErrorBody"), "Unknown model"),
                             "503": _json(_ref("ModelReadiness"), "Not ready")}),
            Route("GET", f"{prefix}/stats", self.model_stats, "Model statistics", schemas.StatisticsBody, errors=(404,),
                  server_level=True),
            Route("POST", f"{prefix}/infer", infer, "Inference", schemas.InferenceResponse, InferenceRequest,
                  _TENSOR_ERRORS),
            Route("POST", f"{prefix}/infer_dict", infer_dict, "Inference on rows keyed by feature name",
                  schemas.InferenceResponse, InferDictRequest, _TENSOR_ERRORS),
            Route("POST", f"{prefix}/explain", self.operation("explain"), "Explanation", schemas.InferenceResponse,
                  InferenceRequest, (*_TENSOR_ERRORS, 501)),
            Route("POST", f"{prefix}/predict", predict, "Inference (MLRun's name)", schemas.InferenceResponse,
                  InferenceRequest, _TENSOR_ERRORS),
            Route("POST", f"{prefix}/predict_dict", predict_dict,
                  "Inference on rows keyed by feature name (MLRun's name)", schemas.InferenceResponse, InferDictRequest,
                  _TENSOR_ERRORS),
            Route("POST", f"{prefix}/generate", self._generate.generate,
                  "Generate (Triton's extension): inputs by name in, one response", None, GenerateRequest,
                  _TENSOR_ERRORS),
            Route("POST", f"{prefix}/generate_stream", self._generate.generate_stream,
                  "Generate, streamed: a server-sent event per response", None, GenerateRequest,
                  _TENSOR_ERRORS, responses=_EVENTS),
            Route("GET", f"{prefix}/{{operation}}", self.custom_operation, "A custom operation (op_<name>)",
                  errors=(404, 500)),
            Route("POST", f"{prefix}/{{operation}}", self.custom_operation, "A custom operation (op_<name>)",
                  errors=(400, 404, 500)),
        ]  # fmt: skip


def v2_routes(core: ServerCore) -> list[Route]:
    return V2Endpoints(core).routes()


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _fields(body: Body) -> dict[str, Any]:
    """The body's fields (parsed once, as an inference request: its operation reuses the parse)."""
    if body.binary_extension:
        return {}
    document = body.inference_json()
    return document if type(document) is dict else {}


def _addressed(fields: dict[str, Any], headers: Mapping[str, str]) -> Addressed:
    model = fields.get("model", headers.get("v2-model"))
    version = fields.get("version", headers.get("v2-version"))
    operation = fields.get("operation", headers.get("v2-operation"))
    request_id = fields.get("id")
    return Addressed(_text(model), _text(version), _text(operation), _text(request_id))


def _text(value: Any) -> str | None:
    return value if value is None or type(value) is str else str(value)

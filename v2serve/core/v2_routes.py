"""The v2 protocol's routes: the first front-end's route list, served by the V2Router's handlers.

Every path of a model exists twice, as ``/v2/models/{model}/...`` and ``/v2/models/{model}/versions/{version}/
...`` (``{model}`` may also be ``name:version``). A request posted to ``/`` names its model in its body or
headers (streams, serverless); ``OPTIONS /`` is the API description (TorchServe's convention).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from v2serve.core.generate import EVENT_STREAM, GenerateEndpoints
from v2serve.core.routes import Handler, Route
from v2serve.event import Event, Reply

BODY_OPERATIONS = {
    "infer": "infer",
    "predict": "infer",
    "infer_dict": "infer_dict",
    "predict_dict": "infer_dict",
    "explain": "explain",
}
"""Operations on a model that take a request body, by the names a path or body may give them (MLRun's
``predict`` names included); anything else after the model is a custom operation."""

OPENAPI_PATH = "/v2/docs/openapi.json"
_TENSOR_ERRORS = (400, 404, 413, 500, 503, 504)
_TEXT = {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}
_EVENTS = {"200": {"description": "One event per response", "content": {EVENT_STREAM: {"schema": {"type": "string"}}}}}


_MODEL_IN_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/[^/]+)?/?$")


def model_in_path(path: str) -> str | None:
    """The ``name`` or ``name:version`` a v2 model path names (a graph's router step routes by it)."""
    match = _MODEL_IN_PATH.match(path)
    if match is None or match["model"] == "stats":
        return None
    return f"{match['model']}:{match['version']}" if match["version"] else match["model"]


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class V2Handlers(Protocol):
    """What serves the v2 routes (the V2Router)."""

    @property
    def generate(self) -> GenerateEndpoints: ...
    def operation(self, operation: str) -> Handler: ...
    def default_operation(self, operation: str) -> Handler: ...
    async def server_metadata(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def openapi(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def body_routed(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def live(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def ready(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def list_models(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def all_stats(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def metrics_text(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def repository_index(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def repository_load(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def repository_unload(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def model_metadata(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def model_ready(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def model_stats(self, event: Event, params: Mapping[str, str]) -> Reply: ...
    async def custom_operation(self, event: Event, params: Mapping[str, str]) -> Reply: ...


def v2_routes(router: V2Handlers) -> list[Route]:
    server = [
        Route("GET", "/", router.server_metadata, "Server metadata", "ServerMetadata", server_level=True),
        Route("OPTIONS", "/", router.openapi, "This OpenAPI description", server_level=True),
        # Which model it addresses, and so which schema its body follows, is in the body itself.
        Route("POST", "/", router.body_routed, "Any operation on the model the body or v2-* headers name",
              documented=False),
        Route("GET", "/v2", router.server_metadata, "Server metadata", "ServerMetadata", server_level=True),
        Route("GET", "/v2/health", router.server_metadata, "Server metadata (MLRun's server info)", "ServerMetadata",
              server_level=True),
        Route("GET", "/v2/health/live", router.live, "Liveness", "Liveness", server_level=True),
        Route("GET", "/v2/health/ready", router.ready, "Readiness", "Readiness", server_level=True,
              responses={"200": _json(_ref("Readiness")), "503": _json(_ref("Readiness"), "Not ready")}),
        Route("GET", "/v2/models", router.list_models, "Names of the models served", "ModelList", server_level=True),
        Route("GET", "/v2/models/stats", router.all_stats, "Statistics of every model", "StatisticsBody",
              server_level=True),
        Route("GET", "/metrics", router.metrics_text, "Prometheus metrics", responses=_TEXT, server_level=True),
        Route("GET", OPENAPI_PATH, router.openapi, "This OpenAPI description", server_level=True),
        Route("POST", "/v2/repository/index", router.repository_index, "Models in the repository and their state",
              None, "RepositoryIndexRequest", (400, 401, 404), request_required=False, server_level=True,
              responses={"200": _json({"type": "array", "items": _ref("RepositoryIndexEntry")})}),
        Route("POST", "/v2/repository/models/{model}/load", router.repository_load, "Load a model", None,
              "RepositoryModelRequest", (400, 401, 403, 404, 409, 500), request_required=False, server_level=True),
    ]  # fmt: skip
    for prefix in ("/v2/repository/models/{model}", "/v2/repository/models/{model}/versions/{version}"):
        server.append(
            Route("POST", f"{prefix}/unload", router.repository_unload, "Unload a model", None,
                  "RepositoryModelRequest", (400, 401, 403, 404, 409), request_required=False, server_level=True)
        )  # fmt: skip
    # MLRun's calls that name no model: the graph's default route (an ensemble) answers them.
    models = [
        Route("POST", f"/v2/models/{operation}", router.default_operation(operation),
              f"{operation.capitalize()} on the default route (MLRun: the ensemble)", "InferenceResponse",
              "InferenceRequest", (*_TENSOR_ERRORS, 501) if operation == "explain" else _TENSOR_ERRORS)
        for operation in ("infer", "predict", "explain")
    ]  # fmt: skip
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        models += [
            # Model probes are answered by the router even when a flow answers the rest: they never run it.
            Route("GET", prefix, router.model_metadata, "Model metadata", "ModelMetadata", errors=(404,),
                  server_level=True),
            Route("POST", prefix, router.operation("infer"), "Inference (MLRun's POST to the model)",
                  "InferenceResponse", "InferenceRequest", _TENSOR_ERRORS),
            Route("GET", f"{prefix}/ready", router.model_ready, "Model readiness", "ModelReadiness", errors=(404,),
                  server_level=True,
                  responses={"200": _json(_ref("ModelReadiness")), "404": _json(_ref("ErrorBody"), "Unknown model"),
                             "503": _json(_ref("ModelReadiness"), "Not ready")}),
            Route("GET", f"{prefix}/stats", router.model_stats, "Model statistics", "StatisticsBody", errors=(404,),
                  server_level=True),
            Route("POST", f"{prefix}/infer", router.operation("infer"), "Inference", "InferenceResponse",
                  "InferenceRequest", _TENSOR_ERRORS),
            Route("POST", f"{prefix}/infer_dict", router.operation("infer_dict"),
                  "Inference on rows keyed by feature name", "InferenceResponse", "InferDictRequest", _TENSOR_ERRORS),
            Route("POST", f"{prefix}/explain", router.operation("explain"), "Explanation", "InferenceResponse",
                  "InferenceRequest", (*_TENSOR_ERRORS, 501)),
            Route("POST", f"{prefix}/predict", router.operation("infer"), "Inference (MLRun's name)",
                  "InferenceResponse", "InferenceRequest", _TENSOR_ERRORS),
            Route("POST", f"{prefix}/predict_dict", router.operation("infer_dict"),
                  "Inference on rows keyed by feature name (MLRun's name)", "InferenceResponse", "InferDictRequest",
                  _TENSOR_ERRORS),
            Route("POST", f"{prefix}/generate", router.generate.generate,
                  "Generate (Triton's extension): inputs by name in, one response", None, "GenerateRequest",
                  _TENSOR_ERRORS),
            Route("POST", f"{prefix}/generate_stream", router.generate.generate_stream,
                  "Generate, streamed: a server-sent event per response", None, "GenerateRequest",
                  _TENSOR_ERRORS, responses=_EVENTS),
            Route("GET", f"{prefix}/{{operation}}", router.custom_operation, "A custom operation (op_<name>)",
                  errors=(404, 500)),
            Route("POST", f"{prefix}/{{operation}}", router.custom_operation, "A custom operation (op_<name>)",
                  errors=(400, 404, 500)),
        ]  # fmt: skip
    return server + models

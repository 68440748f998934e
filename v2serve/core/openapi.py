"""The OpenAPI description of everything the server exposes, served at ``/v2/docs/openapi.json`` and ``OPTIONS /``.

Schemas are generated from the request dataclasses and response TypedDicts the server itself uses, and the
paths follow the route table in ``routing``; a test resolves every documented path through that table.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import TypeAdapter
from typing_extensions import NotRequired, TypedDict

from v2serve.protocol import schemas
from v2serve.protocol.types import InferenceRequest

JSON = "application/json"
OPENAPI_PATH = "/v2/docs/openapi.json"


class InferDictRequest(TypedDict):
    """``infer_dict``: rows as objects keyed by feature name, put in the model's input order."""

    inputs: list[dict[str, Any]] | dict[str, Any]
    id: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]


_SCHEMA_TYPES: tuple[Any, ...] = (
    InferenceRequest,
    InferDictRequest,
    schemas.ErrorBody,
    schemas.ServerMetadata,
    schemas.Liveness,
    schemas.Readiness,
    schemas.ModelList,
    schemas.ModelMetadata,
    schemas.ModelReadiness,
    schemas.InferenceResponse,
    schemas.StatisticsBody,
    schemas.RepositoryIndexEntry,
    schemas.RepositoryIndexRequest,
    schemas.RepositoryModelRequest,
)

# What each error status means wherever it can happen.
_ERRORS = {
    400: "Malformed or invalid request",
    401: "A bearer token is needed",
    404: "Unknown model, version or operation",
    405: "Method not allowed",
    413: "Request body too large",
    500: "The model failed",
    501: "Not implemented by the model",
    503: "Not ready or overloaded (Retry-After)",
    504: "Deadline exceeded",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str | None, description: str = "OK") -> dict[str, Any]:
    schema: dict[str, Any] = _ref(name) if name else {}
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _operation(
    summary: str,
    response: str | None,
    errors: tuple[int, ...],
    request: str | None = None,
    request_required: bool = True,
    parameters: tuple[str, ...] = (),
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": _json(response), **{str(code): _json("ErrorBody", _ERRORS[code]) for code in errors}},
    }
    if parameters:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[^/]+$"}}
            for name in parameters
        ]
    if request is not None:
        operation["requestBody"] = {"required": request_required, "content": {JSON: {"schema": _ref(request)}}}
    return operation


def _model_paths(prefix: str, params: tuple[str, ...]) -> dict[str, Any]:
    tensor_errors = (400, 404, 413, 500, 503, 504)
    return {
        prefix: {
            "get": _operation("Model metadata", "ModelMetadata", (404,), parameters=params),
        },
        f"{prefix}/ready": {
            "get": {
                **_operation("Model readiness", "ModelReadiness", (404,), parameters=params),
                "responses": {
                    "200": _json("ModelReadiness"),
                    "404": _json("ErrorBody", _ERRORS[404]),
                    "503": _json("ModelReadiness", "Not ready"),
                },
            }
        },
        f"{prefix}/stats": {"get": _operation("Model statistics", "StatisticsBody", (404,), parameters=params)},
        f"{prefix}/infer": {
            "post": _operation("Inference", "InferenceResponse", tensor_errors, "InferenceRequest", parameters=params)
        },
        f"{prefix}/infer_dict": {
            "post": _operation(
                "Inference on rows keyed by feature name",
                "InferenceResponse",
                tensor_errors,
                "InferDictRequest",
                parameters=params,
            )
        },
        f"{prefix}/explain": {
            "post": _operation(
                "Explanation", "InferenceResponse", (*tensor_errors, 501), "InferenceRequest", parameters=params
            )
        },
    }


def _paths() -> dict[str, Any]:
    server_metadata = _operation("Server metadata", "ServerMetadata", ())
    paths: dict[str, Any] = {
        "/": {"get": server_metadata, "options": _operation("This OpenAPI description", None, ())},
        "/v2": {"get": server_metadata},
        "/v2/health/live": {"get": _operation("Liveness", "Liveness", ())},
        "/v2/health/ready": {
            "get": {
                **_operation("Readiness", "Readiness", ()),
                "responses": {"200": _json("Readiness"), "503": _json("Readiness", "Not ready")},
            }
        },
        "/v2/models": {"get": _operation("Names of the models served", "ModelList", ())},
        "/v2/models/stats": {"get": _operation("Statistics of every model", "StatisticsBody", ())},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }
        },
        OPENAPI_PATH: {"get": _operation("This OpenAPI description", None, ())},
        "/v2/repository/index": {
            "post": _operation(
                "Models in the repository and their state",
                None,
                (400, 401, 404),
                "RepositoryIndexRequest",
                request_required=False,
            )
        },
    }
    paths["/v2/repository/index"]["post"]["responses"]["200"] = {
        "description": "OK",
        "content": {JSON: {"schema": {"type": "array", "items": _ref("RepositoryIndexEntry")}}},
    }
    for action, errors in (("load", (400, 401, 404, 500)), ("unload", (400, 401, 404))):
        for prefix, params in (
            ("/v2/repository/models/{model}", ("model",)),
            ("/v2/repository/models/{model}/versions/{version}", ("model", "version")),
        ):
            if action == "load" and "version" in params:
                continue  # a load loads every version the repository holds
            paths[f"{prefix}/{action}"] = {
                "post": _operation(
                    f"{action.capitalize()} a model",
                    None,
                    errors,
                    "RepositoryModelRequest",
                    request_required=False,
                    parameters=params,
                )
            }
    paths.update(_model_paths("/v2/models/{model}", ("model",)))
    paths.update(_model_paths("/v2/models/{model}/versions/{version}", ("model", "version")))
    return paths


@cache
def openapi_document() -> dict[str, Any]:
    components: dict[str, Any] = {}
    for kind in _SCHEMA_TYPES:
        schema = TypeAdapter(kind).json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[kind.__name__] = schema
    from v2serve._version import __version__

    return {
        "openapi": "3.1.0",
        "info": {"title": "v2serve", "version": __version__, "description": "KServe/Triton v2 inference protocol"},
        "paths": _paths(),
        "components": {"schemas": components},
    }

"""The OpenAPI description of everything the server exposes, served at ``/v2/docs/openapi.json`` and ``OPTIONS /``.

Schemas are generated from the request dataclasses and response TypedDicts the server itself uses, and the
paths and operations from the route table itself (``routes.py``): what is documented is what is served.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import ConfigDict, TypeAdapter
from typing_extensions import NotRequired, TypedDict

from v2serve.core.routes import Route, RouteTable
from v2serve.protocol import schemas
from v2serve.protocol.types import InferenceRequest

JSON = "application/json"


class InferDictRequest(TypedDict):
    """``infer_dict``: rows as objects keyed by feature name, put in the model's input order."""

    inputs: list[dict[str, Any]] | dict[str, Any]
    id: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]


class GenerateRequest(TypedDict, total=False):
    """Triton's ``generate``: the model's inputs by name (a value or a list of values), and ``parameters``."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    parameters: dict[str, Any]


class KServeV1Request(TypedDict, total=False):
    """KServe v1: ``instances`` (one item per instance) or ``inputs`` (data points, or a batch per input)."""

    instances: list[Any]
    inputs: Any


_SCHEMA_TYPES: tuple[Any, ...] = (
    InferenceRequest,
    InferDictRequest,
    GenerateRequest,
    KServeV1Request,
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
    403: "Refused by the server's policy",
    404: "Unknown model, version or operation",
    405: "Method not allowed",
    409: "Not possible as the server runs (several worker processes)",
    413: "Request body too large",
    500: "The model failed",
    501: "Not implemented by the model",
    502: "A URL the request named could not be read",
    503: "Not ready or overloaded (Retry-After)",
    504: "Deadline exceeded",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str | None, description: str = "OK") -> dict[str, Any]:
    schema: dict[str, Any] = _ref(name) if name else {}
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": route.summary}
    operation["responses"] = {
        "200": _json(route.response),
        **{str(code): _json("ErrorBody", _ERRORS[code]) for code in route.errors},
        **(route.responses or {}),
    }
    if route.parameters:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[^/]+$"}}
            for name in route.parameters
        ]
    if route.request_content is not None:
        operation["requestBody"] = {"required": route.request_required, "content": dict(route.request_content)}
    elif route.request is not None:
        operation["requestBody"] = {
            "required": route.request_required,
            "content": {JSON: {"schema": _ref(route.request)}},
        }
    return operation


def openapi_document(table: RouteTable) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in ``table``, with the schemas they name."""
    from v2serve._version import __version__

    return {
        "openapi": "3.1.0",
        "info": {"title": "v2serve", "version": __version__, "description": "KServe/Triton v2 inference protocol"},
        "paths": table.openapi_paths(_operation),
        "components": {"schemas": _components()},
    }


@cache
def _components() -> dict[str, Any]:
    components: dict[str, Any] = {}
    for kind in _SCHEMA_TYPES:
        schema = TypeAdapter(kind).json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[kind.__name__] = schema
    return components

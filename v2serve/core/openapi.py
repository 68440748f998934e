"""The OpenAPI description of everything the server exposes, served at ``/v2/docs/openapi.json`` and ``OPTIONS /``.

Schemas are generated from the request and response types each route names (TypedDicts and dataclasses
the server itself uses, a front-end's own beside it), and the paths and operations from the route table
itself (``routes.py``): what is documented is what is served, and a new front-end edits nothing here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import TypeAdapter

from v2serve.core.routes import Route, RouteTable
from v2serve.protocol import schemas

JSON = "application/json"


# What each error status means wherever it can happen.
_ERRORS = {
    400: "Malformed or invalid request",
    401: "A bearer token is needed",
    403: "Refused by the server's policy",
    404: "Unknown model, version or operation",
    405: "Method not allowed",
    409: "Not possible as the server runs (several worker processes)",
    413: "Request body too large",
    422: "The request body is not what the route takes (FastAPI's validation error, on Ingrain's routes)",
    500: "The model failed",
    501: "Not implemented by the model",
    502: "A URL the request named could not be read",
    503: "Not ready or overloaded (Retry-After)",
    504: "Deadline exceeded",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(kind: Any, description: str = "OK") -> dict[str, Any]:
    schema: dict[str, Any] = _ref(kind.__name__) if kind is not None else {}
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": route.summary}
    operation["responses"] = {
        "200": _json(route.response),
        **{str(code): _json(schemas.ErrorBody, _ERRORS[code]) for code in route.errors},
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
            "content": {JSON: {"schema": _ref(route.request.__name__)}},
        }
    return operation


def openapi_document(table: RouteTable) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in ``table``, with the schemas they name."""
    from v2serve._version import __version__

    return {
        "openapi": "3.1.0",
        "info": {"title": "v2serve", "version": __version__, "description": "KServe/Triton v2 inference protocol"},
        "paths": table.openapi_paths(_operation),
        "components": {"schemas": _components(table.routes)},
    }


def _components(routes: list[Route]) -> dict[str, Any]:
    """The schemas of every type the routes name (and of the error body), collected from the routes."""
    kinds = {schemas.ErrorBody}
    for route in routes:
        if route.documented:
            kinds.update(kind for kind in (route.request, route.response, *route.components) if kind is not None)
    components: dict[str, Any] = {}
    for kind in sorted(kinds, key=lambda kind: kind.__name__):
        components.update(_schema_of(kind))
    return components


@cache
def _schema_of(kind: Any) -> dict[str, Any]:
    schema = TypeAdapter(kind).json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs", {}), kind.__name__: schema}

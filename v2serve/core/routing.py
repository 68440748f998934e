"""Resolving a request path to what it addresses: a server endpoint, or a model, version and operation."""

from __future__ import annotations

import re
from dataclasses import dataclass

from v2serve.errors import MethodNotAllowed, OperationNotFound, V2ServeError

# The server-level endpoints, by path: (name, allowed method).
SERVER_ENDPOINTS: dict[str, tuple[str, str]] = {
    "": ("server_metadata", "GET"),
    "/v2": ("server_metadata", "GET"),
    "/v2/health/live": ("live", "GET"),
    "/v2/health/ready": ("ready", "GET"),
    "/v2/models": ("list_models", "GET"),
    "/v2/models/stats": ("all_stats", "GET"),
    "/metrics": ("metrics", "GET"),
    "/v2/repository/index": ("repository_index", "POST"),
    "/v2/docs/openapi.json": ("openapi", "GET"),
}

# Operations on a model that take a request body; anything else after the model is a custom operation.
BODY_OPERATIONS = {
    "infer": "infer",
    "predict": "infer",
    "infer_dict": "infer_dict",
    "predict_dict": "infer_dict",
    "explain": "explain",
}

_REPOSITORY_PATH = re.compile(
    r"^/v2/repository/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/(?P<action>load|unload)$"
)
_MODEL_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/(?P<op>[^/]+))?$")


@dataclass(frozen=True, slots=True)
class Target:
    """What a request addresses. ``endpoint`` is a server endpoint name or a model operation."""

    endpoint: str
    model: str | None = None
    version: str | None = None
    operation: str | None = None


_RESOLVED_LIMIT = 4096
_resolved: dict[tuple[str, str], Target] = {}


def resolve_path(method: str, path: str) -> Target:
    """Map ``(method, path)`` to a Target, or raise OperationNotFound / MethodNotAllowed."""
    # Clients repeat a handful of paths; remembering them skips the regexes on the request path. The memo
    # is bounded (paths come from clients) and holds only successes: errors are re-raised fresh each time.
    key = (method, path)
    target = _resolved.get(key)
    if target is None:
        target = _resolve(method, path)
        if len(_resolved) >= _RESOLVED_LIMIT:
            _resolved.clear()
        _resolved[key] = target
    return target


def _resolve(method: str, path: str) -> Target:
    path = path.rstrip("/")
    method = method.upper()
    if path == "" and method == "POST":
        # No URL to route by (streams, serverless triggers): the body or headers name the model.
        return Target("body_routed")
    if path == "" and method == "OPTIONS":
        return Target("openapi")  # TorchServe's convention for the API description
    server = SERVER_ENDPOINTS.get(path)
    if server is not None:
        name, allowed = server
        _check_method(method, (allowed,), path)
        return Target(name)
    repository = _REPOSITORY_PATH.match(path)
    if repository is not None:
        _check_method(method, ("POST",), path)
        model, version, action = repository.group("model", "version", "action")
        return Target(f"repository_{action}", model, version)
    match = _MODEL_PATH.match(path)
    if match is None:
        raise OperationNotFound(f"no route for {method} {path or '/'}")
    model, version, op = match.group("model", "version", "op")
    if op is None:
        # MLRun serves a POST to the model itself as infer; GET is the model's metadata.
        if method == "GET":
            return Target("model_metadata", model, version)
        _check_method(method, ("GET", "POST"), path)
        return Target("model_operation", model, version, "infer")
    if op == "ready":
        _check_method(method, ("GET",), path)
        return Target("model_ready", model, version)
    if op == "stats" and method == "GET":
        return Target("model_stats", model, version)
    if op in BODY_OPERATIONS:
        _check_method(method, ("POST",), path)
        return Target("model_operation", model, version, BODY_OPERATIONS[op])
    _check_method(method, ("GET", "POST"), path)
    return Target("model_operation", model, version, op)


def is_server_request(method: str, path: str) -> bool:
    """Whether a request is about the server itself (health, metadata, metrics, statistics, the repository,
    the API description) rather than about what it serves: a flow graph leaves these to the router."""
    try:
        target = resolve_path(method, path)
    except V2ServeError:
        return False
    if target.endpoint.startswith("repository_"):
        return True
    return target.model is None and target.endpoint != "body_routed"


def _check_method(method: str, allowed: tuple[str, ...], path: str) -> None:
    if method not in allowed:
        raise MethodNotAllowed(
            f"{method} is not allowed on {path or '/'}; use {' or '.join(allowed)}",
            headers={"allow": ", ".join(allowed)},
        )

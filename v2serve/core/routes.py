"""Routes as data: a front-end is a list of Route objects, and one RouteTable dispatches and documents them.

A route names its method, its path pattern (``{name}`` matches one path segment), its handler, and what it
documents: a summary, the schemas of its request and response bodies, its error statuses. The same list
drives dispatch (``RouteTable.resolve``) and the OpenAPI document (``RouteTable.openapi``), so the two cannot
drift apart. A new front-end adds a list; nothing in the table changes::

    ping = Route("GET", "/ping", handle_ping, "Liveness, TorchServe style", response=Liveness)
    table = RouteTable([*v2_routes, ping])
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from v2serve.errors import MethodNotAllowed, OperationNotFound, V2ServeError
from v2serve.event import Event, Reply

Handler = Callable[[Event, Mapping[str, str]], Awaitable[Reply]]
"""A route's handler: the request and the path parameters its pattern captured."""

_PARAMETER = re.compile(r"\{(\w+)\}")
_NO_PARAMETERS: Mapping[str, str] = {}


@dataclass(frozen=True)
class Route:
    """One method on one path pattern, and what it documents."""

    method: str
    path: str
    handler: Handler = field(compare=False)
    summary: str
    response: Any = None
    """The type (a TypedDict or dataclass) whose schema describes the 200 body; None: not described."""
    request: Any = None
    """The type whose schema describes the request body; None: the route takes none."""
    errors: tuple[int, ...] = ()
    request_required: bool = True
    responses: Mapping[str, Any] | None = None
    """OpenAPI responses, by status, that replace the generated ones (a 503 with a body of its own, a text
    body)."""
    server_level: bool = False
    """About the server itself (health, metadata, metrics, the repository): answered by the router even when
    a flow graph answers everything else."""
    documented: bool = True
    """False leaves the route out of the OpenAPI document (a route whose body no schema can describe)."""
    replaces: bool = False
    """This route takes the place of an earlier one on the same method and path (a front-end that answers
    ``GET /`` in a shape of its own); without it, two routes on one method and path are an error."""
    request_content: Mapping[str, Any] | None = None
    """The OpenAPI ``content`` of a request body that is not one JSON schema (any media type, a form)."""
    components: tuple[Any, ...] = ()
    """Further types whose schemas ``responses`` refers to by name (``#/components/schemas/<name>``)."""
    listener: str | None = None
    """The one listener (``Event.listener``: a port of its own) this route answers on, where no other route
    answers (TorchServe's management port); None: the main port and the listeners without routes of
    their own."""

    @property
    def parameters(self) -> list[str]:
        return _PARAMETER.findall(self.path)


class RouteTable:
    """Resolves ``(method, path)`` to a route and its parameters; routes are tried in the order given, and
    the first whose pattern matches the path decides (405 with ``Allow`` when it lacks the method)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._static: dict[str, dict[str, Route]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Route]]] = []
        by_pattern: dict[str, dict[str, Route]] = {}
        for route in routes:
            methods = by_pattern.setdefault(route.path, {})
            if route.method in methods and not route.replaces:
                raise ValueError(f"two routes for {route.method} {route.path}")
            methods[route.method] = route
        self.routes = [route for methods in by_pattern.values() for route in methods.values()]
        for path, methods in by_pattern.items():
            if "{" in path:
                self._patterns.append((_compile(path), methods))
            else:
                self._static[path] = methods
        self._memo: dict[tuple[str, str], tuple[Route, Mapping[str, str]]] = {}

    def resolve(self, method: str, path: str) -> tuple[Route, Mapping[str, str]]:
        """The route and its parameters; OperationNotFound (404) or MethodNotAllowed (405) otherwise."""
        # Clients repeat a handful of paths; remembering them skips the patterns on the request path. The
        # memo is bounded (paths come from clients) and holds only successes.
        key = (method, path)
        found = self._memo.get(key)
        if found is None:
            found = self._resolve(method.upper(), path.rstrip("/") or "/")
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _resolve(self, method: str, path: str) -> tuple[Route, Mapping[str, str]]:
        methods = self._static.get(path)
        params: Mapping[str, str] = _NO_PARAMETERS
        if methods is None:
            for pattern, candidates in self._patterns:
                match = pattern.match(path)
                if match is not None:
                    methods, params = candidates, match.groupdict()
                    break
            else:
                raise OperationNotFound(f"no route for {method} {path}")
        route = methods.get(method)
        if route is None:
            allowed = sorted(methods)
            raise MethodNotAllowed(
                f"{method} is not allowed on {path}; use {' or '.join(allowed)}", headers={"allow": ", ".join(allowed)}
            )
        return route, params

    def openapi_paths(self, operation: Callable[[Route], dict[str, Any]]) -> dict[str, Any]:
        """The OpenAPI ``paths`` object: ``operation`` describes one route."""
        paths: dict[str, Any] = {}
        for route in self.routes:
            if route.documented:
                paths.setdefault(route.path, {})[route.method.lower()] = operation(route)
        return paths


_MEMO_LIMIT = 4096


def errors_rendered(handler: Handler, render: Callable[[V2ServeError], Reply]) -> Handler:
    """``handler`` with the errors it raises answered in a front-end's own shape (``render``) rather than v2's
    ``{"error"}``."""

    async def handle(event: Event, params: Mapping[str, str]) -> Reply:
        try:
            return await handler(event, params)
        except V2ServeError as exc:
            return render(exc)

    return handle


def _compile(path: str) -> re.Pattern[str]:
    pattern = "".join(
        f"(?P<{part[1:-1]}>[^/]+)" if _PARAMETER.fullmatch(part) else re.escape(part)
        for part in re.split(r"(\{\w+\})", path)
    )
    return re.compile(f"^{pattern}$")

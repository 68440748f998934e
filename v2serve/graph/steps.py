"""Runtime steps of a flow graph: each takes the body it is given and returns the body it produces."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from v2serve.core.operations import Kind, canonical, kind_of, model_in_path
from v2serve.core.server_core import ServerCore
from v2serve.data.requests import document_with_data_url, with_data_url
from v2serve.engine.invoker import BoundMethod, Runner
from v2serve.errors import InferenceError, InvalidRequest, ModelNotFound
from v2serve.event import Event
from v2serve.protocol.bodies import v2_decoder
from v2serve.protocol.body import Body
from v2serve.protocol.response import InferenceResult


class Step(Protocol):
    """A runtime step. ``run`` receives the (decoded) body and the originating event."""

    name: str

    async def run(self, body: Any, event: Event) -> Any: ...


class TaskStep:
    """A function, or a class instance's ``do``, applied to the body; sync code runs in the thread pool."""

    def __init__(self, name: str, method: BoundMethod, runner: Runner) -> None:
        self.name = name
        self._method = method
        self._runner = runner

    async def run(self, body: Any, event: Event) -> Any:
        return await self._runner.run(self._method, body, event)


class ModelStep:
    """A registered model used inside a flow: the body is a v2 request (a Python value), the result the v2
    response as Python values with numpy data, straight from the data plane: no JSON between steps."""

    def __init__(self, name: str, model: str, version: str | None, core: ServerCore) -> None:
        self.name = name
        self.model, self.version = model, version
        self._core = core
        self._dataplane = core.dataplane

    async def run(self, body: Any, event: Event) -> Any:
        entry = self._core.registry.resolve(self.model, self.version)
        named = body.get("operation", "infer") if isinstance(body, dict) else "infer"
        operation = canonical(named)
        kind = kind_of(entry, operation)
        if kind is not Kind.TENSORS:
            if kind is Kind.DOCUMENT:
                body = await document_with_data_url(body, self._core.data)
            return await self._dataplane.call(
                entry, operation, body, headers=event.headers, event_id=event.id, named=named
            )
        request, runs = await with_data_url(Body.decoded(body), operation, entry.schema, self._core.data)
        result = await self._dataplane.infer(
            entry, v2_decoder(request, runs), explain=runs == "explain", headers=event.headers, event_id=event.id
        )
        return result.encode(InferenceResult.as_value)


class ParallelStep:
    """Runs every child on the same body concurrently and merges their results as MLRun's ParallelRun does:
    each child's result (an object) merged into a new object, in child order, a later child's keys over an
    earlier one's; with ``extend_event``, merged into (a copy of) the body the step received. ``by_step``
    answers an object of results by child name instead, whatever their type.

    MLRun merges in the order its children finish; here the order is the children's, so that the same
    request always gets the same answer."""

    def __init__(self, name: str, children: list[Step], extend_event: bool = False, by_step: bool = False) -> None:
        self.name = name
        self._children = children
        self._extend_event = extend_event
        self._by_step = by_step

    async def run(self, body: Any, event: Event) -> Any:
        results = await asyncio.gather(*(child.run(body, event) for child in self._children))
        if self._by_step:
            return {child.name: result for child, result in zip(self._children, results, strict=True)}
        if not self._extend_event:
            merged: dict[str, Any] = {}
        elif isinstance(body, dict):
            merged = dict(body)
        else:
            raise InvalidRequest(f"parallel step {self.name!r} extends the event, which must be a JSON object")
        for child, result in zip(self._children, results, strict=True):
            if not isinstance(result, dict):
                raise InferenceError(
                    f"step {child.name!r} answered {type(result).__name__}, not an object to merge (a parallel step "
                    "merges its children's objects, as MLRun's ParallelRun does; merge: by_step keeps each result "
                    "under its child's name)"
                )
            merged.update(result)
        return merged


class RouterStep:
    """Sends the body to one of its model routes, chosen by the URL's model or the body's ``model`` field."""

    def __init__(self, name: str, routes: dict[str, Step]) -> None:
        self.name = name
        self._routes = routes

    async def run(self, body: Any, event: Event) -> Any:
        key = _model_from_body(body) or _model_from_path(event)
        if key is None:
            if len(self._routes) == 1:
                return await next(iter(self._routes.values())).run(body, event)
            raise InvalidRequest(f"router {self.name!r}: the request names no model; routes: {sorted(self._routes)}")
        route = self._routes.get(key) or self._routes.get(key.split(":", 1)[0])
        if route is None:
            raise ModelNotFound(f"router {self.name!r} has no route {key!r}; routes: {sorted(self._routes)}")
        return await route.run(body, event)


def _model_from_body(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        version = body.get("version")
        return f"{body['model']}:{version}" if version else str(body["model"])
    return None


def _model_from_path(event: Event) -> str | None:
    return model_in_path(event.path)

"""The v2 router: one Event in, one Reply out, for every transport."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from v2serve._version import __version__
from v2serve.core.dataplane import TENSOR_OPERATIONS, DataPlane
from v2serve.core.generate import GenerateEndpoints
from v2serve.core.openapi import openapi_document
from v2serve.core.repository_api import RepositoryEndpoints
from v2serve.core.routes import Handler, Route, RouteTable
from v2serve.core.v2_routes import BODY_OPERATIONS, v2_routes
from v2serve.data.fetch import DataFetcher
from v2serve.errors import InvalidRequest, OperationNotFound, V2ServeError
from v2serve.event import Addressed, Event, Reply
from v2serve.metrics.server import PROMETHEUS_CONTENT_TYPE, ServerMetrics
from v2serve.models.registry import ModelEntry, ModelRegistry
from v2serve.protocol import binary
from v2serve.protocol.jsonio import JSON_CONTENT_TYPE, dumps, loads
from v2serve.protocol.request_json import loads_inference_request
from v2serve.protocol.response import InferenceResult, encode_inference_response
from v2serve.protocol.schemas import (
    ErrorBody,
    ServerMetadata,
)

logger = logging.getLogger("v2serve.router")

EXTENSIONS = ["binary_tensor_data", "statistics", "model_repository"]
"""The protocol extensions this server implements, as advertised by ``GET /v2``."""


FrontEnd = Callable[["V2Router"], Sequence[Route]]
"""A front-end beside v2: the routes it serves, built over the router's models and data plane."""


def error_reply(exc: V2ServeError) -> Reply:
    """The v2 rendering of an error: ``{"error": message}`` with its status; the reply keeps the error."""
    reply = Reply.json(ErrorBody(error=exc.message), exc.status_code, dict(exc.headers))
    reply.error = exc
    return reply


def v2_reply(result: InferenceResult) -> Reply:
    """The v2 rendering of an inference result: JSON, or JSON and binary tensor data as the request asked."""
    encoded = encode_inference_response(
        model_name=result.model_name, model_version=result.model_version, request_id=result.id, outputs=result.outputs
    )
    return Reply(200, encoded.body, encoded.content_type, encoded.headers)


def value_reply(value: Any) -> Reply:
    """A value as MLRun answers it: a str as text/plain, bytes as they are, anything else as JSON."""
    if isinstance(value, str):
        return Reply(200, value.encode(), TEXT_CONTENT_TYPE)
    if isinstance(value, bytes | bytearray | memoryview):
        return Reply(200, bytes(value), BINARY_CONTENT_TYPE)
    return Reply.json(value)


TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
BINARY_CONTENT_TYPE = "application/octet-stream"


class V2Router:
    """Serves the v2 protocol over a model registry, through a table of routes (``v2_routes``, then
    ``extra_routes``, then the routes of each of ``frontends``).

    ``handle`` never raises: every failure becomes a Reply with the status of its V2ServeError class and an
    ``{"error": ...}`` body, and anything unexpected a logged 500.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        server_name: str = "v2serve",
        debug: bool = False,
        data: DataFetcher | None = None,
        serves_graph: bool = False,
        metrics: ServerMetrics | None = None,
        repository: RepositoryEndpoints | None = None,
        extra_routes: Sequence[Route] = (),
        frontends: Sequence[FrontEnd] = (),
    ) -> None:
        self.registry = registry
        self.server_name = server_name
        # A server whose graph holds only tasks is ready without models; a bare router is not.
        self.serves_graph = serves_graph
        self.metrics = metrics
        self.repository = repository
        self.data = data
        """Reads what requests name by URL (``data_url``, Ingrain's image URLs), under the data policy."""
        self.dataplane = DataPlane(registry, debug=debug, data=data)
        self.generate = GenerateEndpoints(self.dataplane, self.entry)
        self.default_model: str | None = None
        """The model (``name`` or ``name:version``) that answers a request naming none (a graph's default
        route); without one, such a request goes to the only model, or is a 400 when there are several."""
        self.table = RouteTable(
            [*v2_routes(self), *extra_routes, *(route for frontend in frontends for route in frontend(self))]
        )
        self._openapi: bytes | None = None

    async def handle(self, event: Event) -> Reply:
        try:
            try:
                route, params = self.table.resolve(event.method, event.path)
            except V2ServeError as exc:
                self._count_unrouted(exc)
                raise
            return await route.handler(event, params)
        except V2ServeError as exc:
            return error_reply(exc)
        except Exception:
            logger.exception("unexpected error serving %s %s", event.method, event.path)
            return error_reply(V2ServeError("internal server error"))

    def is_server_request(self, method: str, path: str) -> bool:
        """Whether a request is about the server itself (health, metadata, metrics, statistics, the
        repository, the API description) rather than about what it serves: a flow leaves these to the router."""
        try:
            route, _ = self.table.resolve(method, path)
        except V2ServeError:
            return False
        return route.server_level

    # ------------------------------------------------------------ model routes

    def entry(self, params: Mapping[str, str]) -> ModelEntry:
        """The model version a route's ``model`` (or ``name:version``) and ``version`` name."""
        try:
            return self.registry.resolve(params["model"], params.get("version"))
        except V2ServeError as exc:
            self._count_unrouted(exc)
            raise

    def operation(self, operation: str) -> Handler:
        """The handler of a route for one model operation."""
        if operation in TENSOR_OPERATIONS:

            async def tensors(event: Event, params: Mapping[str, str]) -> Reply:
                entry = self.entry(params)
                if entry.model.takes_documents:
                    value = await self.dataplane.document(entry, operation, event.body, event.headers, event.id)
                    return value_reply(value)
                return await self.dataplane.infer(entry, operation, event.body, event.headers, v2_reply, event.id)

            return tensors
        return self.custom_operation

    async def custom_operation(self, event: Event, params: Mapping[str, str]) -> Reply:
        entry = self.entry(params)
        value = await self.dataplane.custom(entry, params["operation"], event.body, event.headers, event.id)
        return value_reply(value)

    async def model_metadata(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json(self.dataplane.model_metadata(self.entry(params)))

    async def model_ready(self, event: Event, params: Mapping[str, str]) -> Reply:
        failures = {} if self.repository is None else self.repository.repository.failures
        readiness = self.dataplane.model_readiness(self.entry(params), failures)
        ready = readiness["ready"]
        return Reply.json(readiness, 200 if ready else 503, {} if ready else {"retry-after": "1"})

    async def model_stats(self, event: Event, params: Mapping[str, str]) -> Reply:
        pinned = "version" in params or ":" in params["model"]
        entry = self.entry(params)
        statistics = self.dataplane.statistics(entry, every_version=not pinned)
        if self.metrics is not None and self.metrics.peers is not None:
            # Every worker's counts of this model (or version), added up.
            total = await self.statistics_total()
            wanted = {(s["name"], s["version"]) for s in statistics["model_stats"]}
            statistics["model_stats"] = [s for s in total["model_stats"] if (s["name"], s["version"]) in wanted]
        return Reply.json(statistics)

    async def body_routed(self, event: Event, params: Mapping[str, str]) -> Reply:
        """A request posted to ``/`` (streams, serverless): the body's ``model``, ``version`` and
        ``operation`` fields, else the ``v2-*`` headers, say what it addresses. Its reply carries what the
        body named, so that a transport can write an error record without parsing anything again."""
        addressed = _addressed({}, event.headers)
        try:
            try:
                raw = event.body
                fields, event = self._parse_body(event)
                addressed = _addressed(fields, event.headers)
                target, event = self._body_target(addressed, event, raw)
            except V2ServeError as exc:
                self._count_unrouted(exc)
                raise
            reply = await self.operation(target["operation"])(event, target)
        except V2ServeError as exc:
            reply = error_reply(exc)
        reply.addressed = addressed
        return reply

    # ------------------------------------------------------------ server routes

    async def server_metadata(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json(ServerMetadata(name=self.server_name, version=__version__, extensions=EXTENSIONS))

    async def live(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json({"live": True})

    async def ready(self, event: Event, params: Mapping[str, str]) -> Reply:
        readiness = self.dataplane.server_readiness(allow_empty=self.serves_graph)
        return Reply.json(
            readiness, 200 if readiness["ready"] else 503, {} if readiness["ready"] else {"retry-after": "1"}
        )

    async def list_models(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json({"models": self.registry.listing()})

    async def all_stats(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json(await self.statistics_total())

    async def statistics_total(self) -> Mapping[str, Any]:
        """Triton's statistics of every model, added up over the worker processes when there are several."""
        statistics = self.dataplane.statistics()
        if self.metrics is not None:
            return await self.metrics.statistics_total(dict(statistics))
        return statistics

    async def metrics_text(self, event: Event, params: Mapping[str, str]) -> Reply:
        if self.metrics is None:
            raise OperationNotFound("this server keeps no metrics")
        return Reply(200, await self.metrics.render_total(), PROMETHEUS_CONTENT_TYPE)

    async def openapi(self, event: Event, params: Mapping[str, str]) -> Reply:
        if self._openapi is None:
            self._openapi = dumps(openapi_document(self.table))
        return Reply(200, self._openapi, JSON_CONTENT_TYPE)

    async def repository_index(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json(await self._repository(event).index(event))

    async def repository_load(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json(await self._repository(event).load(event, params["model"]))

    async def repository_unload(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply.json(await self._repository(event).unload(event, params["model"], params.get("version")))

    def _repository(self, event: Event) -> RepositoryEndpoints:
        if self.repository is None:
            raise OperationNotFound(f"no route for {event.method} {event.path}")
        return self.repository

    # ------------------------------------------------------------ helpers

    def unnamed_model(self) -> str:
        """The model a request that names none goes to: the default route, else the only model."""
        if self.default_model is not None:
            return self.default_model
        names = self.registry.names()
        if len(names) != 1:
            raise InvalidRequest(
                f"the request names no model (field 'model' or header v2-model) and "
                f"this server has {len(names)}: {', '.join(names) or 'none'}"
            )
        return names[0]

    def default_operation(self, operation: str) -> Handler:
        """The handler of ``POST /v2/models/<operation>``, which names no model (MLRun's ensemble calls)."""
        handler = self.operation(BODY_OPERATIONS[operation])

        async def unnamed(event: Event, params: Mapping[str, str]) -> Reply:
            try:
                model = self.unnamed_model()
            except V2ServeError as exc:
                self._count_unrouted(exc)
                raise
            return await handler(event, {"model": model})

        return unnamed

    def _count_unrouted(self, exc: V2ServeError) -> None:
        if self.metrics is not None:
            self.metrics.unrouted(exc.status_code)

    def _parse_body(self, event: Event) -> tuple[dict[str, Any], Event]:
        """The body's fields, and the event with its body parsed (once) for the data plane."""
        body = event.body
        if isinstance(body, bytes | bytearray | memoryview) and binary.HEADER_LENGTH not in event.headers:
            body = loads_inference_request(body)
            event = replace(event, body=body)
        return (body if isinstance(body, dict) else {}), event

    def _body_target(self, addressed: Addressed, event: Event, raw: Any) -> tuple[dict[str, str], Event]:
        """Model, version and operation as route parameters; a body that names no model goes to the only
        model, and is an error when there are several."""
        model = addressed.model or self.unnamed_model()
        operation = addressed.operation or "infer"
        operation = BODY_OPERATIONS.get(operation, operation)
        if operation not in TENSOR_OPERATIONS and raw is not event.body:
            # Custom operations get the document as plain JSON, data lists included, not as numpy arrays.
            event = replace(event, body=loads(raw))
        target = {"model": model, "operation": operation}
        if addressed.version is not None:
            target["version"] = addressed.version
        return target, event


def _addressed(fields: dict[str, Any], headers: Mapping[str, str]) -> Addressed:
    def pick(key: str) -> str | None:
        value = fields.get(key, headers.get(f"v2-{key}"))
        return None if value is None else str(value)

    request_id = fields.get("id")
    return Addressed(pick("model"), pick("version"), pick("operation"), None if request_id is None else str(request_id))

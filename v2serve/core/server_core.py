"""The server core: what a server owns, handed to every front-end, gRPC, the graph and the streams.

``ServerCore`` holds the registry, the data plane, the data reader, the metrics, the repository API and the
server's facts (name, version, extensions, whether it serves a graph, its default route). It answers the
questions several front-ends ask in the same way (which model a route names, is the server ready, the
statistics of every worker) as values; each front-end renders them in its own API's shape. No front-end
reaches into another: this is KServe's composition (one data plane under many endpoints), with v2 one
front-end among the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from v2serve._version import __version__
from v2serve.core.dataplane import DataPlane
from v2serve.core.openapi import openapi_document
from v2serve.core.repository_api import RepositoryEndpoints
from v2serve.core.routes import Route, RouteTable
from v2serve.data.fetch import DataFetcher
from v2serve.engine.registry import ModelEntry, ModelRegistry
from v2serve.errors import InvalidRequest, ModelNotFound, OperationNotFound, V2ServeError
from v2serve.metrics.server import ServerMetrics
from v2serve.protocol.jsonio import dumps
from v2serve.protocol.schemas import ModelReadiness, Readiness, ServerMetadata

EXTENSIONS = ["binary_tensor_data", "statistics", "model_repository"]
"""The protocol extensions this server implements, as advertised by ``GET /v2``."""


@dataclass
class ServerInfo:
    """The server's facts, as its front-ends report them."""

    name: str = "v2serve"
    version: str = __version__
    extensions: list[str] = field(default_factory=lambda: list(EXTENSIONS))
    serves_graph: bool = False
    """A server whose graph holds only tasks is ready without models; a bare server is not."""
    default_model: str | None = None
    """The model (``name`` or ``name:version``) that answers a request naming none (a graph's default
    route); without one, such a request goes to the only model, or is a 400 when there are several."""
    listing: dict[str, Any] = field(default_factory=dict)
    """What the model list answers beside the models (a graph's ensemble's ``weights``)."""
    mlrun_router: str | None = None
    """A router graph of MLRun-style models answers about itself as MLRun's router does: the router's class
    name (``ModelRouter``, ``VotingEnsemble``) as its server info, and a route named without the version it
    needs is unknown, as MLRun's router has it. None: v2serve's own answers."""


class ServerCore:
    """What the server owns, and the answers several front-ends share. Built once, in ``server.py``."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        info: ServerInfo | None = None,
        debug: bool = False,
        data: DataFetcher | None = None,
        metrics: ServerMetrics | None = None,
        repository: RepositoryEndpoints | None = None,
    ) -> None:
        self.registry = registry
        self.info = info or ServerInfo()
        self.data = data
        """Reads what requests name by URL (``data_url``, Ingrain's image URLs), under the data policy."""
        self.metrics = metrics
        self.repository = repository
        self.dataplane = DataPlane(registry, debug=debug)
        self.routes: RouteTable | None = None
        """Every front-end's routes, once the dispatcher has gathered them (the API description is theirs)."""
        self._openapi: bytes | None = None

    # ------------------------------------------------------------ what a request addresses

    def entry(self, params: Mapping[str, str]) -> ModelEntry:
        """The model version a route's ``model`` (or ``name:version``) and ``version`` name; an unknown one
        is counted as unrouted."""
        try:  # resolve(), inline: this runs for every request
            if self.info.mlrun_router is not None:
                self._check_mlrun_route(params["model"], params.get("version"))
            return self.registry.resolve(params["model"], params.get("version"))
        except V2ServeError as exc:
            self.count_unrouted(exc)
            raise

    def _check_mlrun_route(self, name: str, version: str | None) -> None:
        """MLRun's router knows its routes by key (``m``, ``m:v1``): ``m`` is no route where only ``m:v1`` and
        ``m:v2`` are, and an unknown key is answered in MLRun's words."""
        key = name if version is None else f"{name}:{version}"
        routes = self.registry.listing()
        if key not in routes:
            raise ModelNotFound(f"model {key} doesnt exist, available models: {' | '.join(routes)}")

    def resolve(self, name: str, version: str | None = None) -> ModelEntry:
        """The model version ``name`` and ``version`` name, counted as unrouted when there is none."""
        try:
            return self.registry.resolve(name, version)
        except V2ServeError as exc:
            self.count_unrouted(exc)
            raise

    def unnamed_model(self) -> str:
        """The model a request that names none goes to: the default route, else the only model."""
        if self.info.default_model is not None:
            return self.info.default_model
        names = self.registry.names()
        if len(names) != 1:
            error = InvalidRequest(
                f"the request names no model (field 'model' or header v2-model) and "
                f"this server has {len(names)}: {', '.join(names) or 'none'}"
            )
            self.count_unrouted(error)
            raise error
        return names[0]

    def count_unrouted(self, exc: V2ServeError) -> None:
        """A request that reached no model (an unknown path, model or version), by its status."""
        if self.metrics is not None:
            self.metrics.unrouted(exc.status_code)

    # ------------------------------------------------------------ about the server

    def server_metadata(self) -> ServerMetadata:
        if self.info.mlrun_router is not None:  # what MLRun's router answers (its get_metadata)
            return ServerMetadata(name=self.info.mlrun_router, version="v2", extensions=[])
        return ServerMetadata(name=self.info.name, version=self.info.version, extensions=self.info.extensions)

    def readiness(self) -> Readiness:
        """Ready when every model is (a graph of tasks alone is ready with none)."""
        return self.dataplane.server_readiness(allow_empty=self.info.serves_graph)

    def model_readiness(self, entry: ModelEntry) -> ModelReadiness:
        """The version's state, with the repository's last failed load of its name."""
        failures = {} if self.repository is None else self.repository.repository.failures
        return self.dataplane.model_readiness(entry, failures)

    async def statistics_total(self) -> Mapping[str, Any]:
        """Triton's statistics of every model, added up over the worker processes when there are several."""
        statistics = self.dataplane.statistics()
        if self.metrics is not None:
            return await self.metrics.statistics_total(dict(statistics))
        return statistics

    async def metrics_text(self) -> bytes:
        """The Prometheus exposition of every worker's metrics."""
        if self.metrics is None:
            raise OperationNotFound("this server keeps no metrics")
        return await self.metrics.render_total()

    def openapi(self) -> bytes:
        """The OpenAPI document of every route served, encoded once."""
        if self._openapi is None:
            if self.routes is None:
                raise OperationNotFound("this server describes no routes")
            self._openapi = dumps(openapi_document(self.routes))
        return self._openapi


FrontEnd = Callable[[ServerCore], Sequence[Route]]
"""A front-end: the routes it serves, built over the server core."""

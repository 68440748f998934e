"""A model server, transport-free: the models, their thread pool, the graph that serves them, the lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from v2serve._version import __version__
from v2serve.core.dispatch import Dispatcher
from v2serve.core.repository_api import RepositoryEndpoints
from v2serve.core.routes import Route
from v2serve.core.server_core import EXTENSIONS, FrontEnd, ServerCore, ServerInfo
from v2serve.data.artifacts import ArtifactCache
from v2serve.data.fetch import DataFetcher
from v2serve.data.hub import HubDownloads
from v2serve.data.policy import DataPolicy
from v2serve.engine.invoker import Runner
from v2serve.engine.loader import SETTINGS_FILE, models_from_target
from v2serve.engine.registry import ModelRegistry, ModelState
from v2serve.engine.repository import ModelRepository
from v2serve.errors import install_hint
from v2serve.event import Event, Reply
from v2serve.frontends.catalogue import ModelCatalogue
from v2serve.frontends.docs import docs_routes
from v2serve.frontends.ingrain import ingrain_routes
from v2serve.frontends.ingrain_models import IngrainModelEndpoints
from v2serve.frontends.kserve_v1 import kserve_v1_routes
from v2serve.frontends.torchserve import torchserve_routes
from v2serve.frontends.torchserve_management import torchserve_management_routes
from v2serve.frontends.v2 import v2_routes
from v2serve.graph.compile import GraphCompiler
from v2serve.graph.flow import Flow
from v2serve.graph.spec import GraphSpec
from v2serve.logs import REQUEST_ID
from v2serve.metrics.peers import Snapshot, WorkerPeers
from v2serve.metrics.server import ServerMetrics
from v2serve.models.base import Model
from v2serve.settings import Settings

if TYPE_CHECKING:
    from v2serve.tracing import Tracing

logger = logging.getLogger("v2serve.server")


class ModelServer:
    """Owns the models and serves Events. Transports call ``start``, then ``handle`` per request, then ``stop``.

    It builds the server core (registry, data plane, data reader, metrics, repository) and hands it to every
    front-end that is on (v2 first); ``models`` are served by their routes. A ``graph`` adds its own models
    and, for a flow, answers every request that is not about the server itself. With ``settings.load_in_background`` the
    models load after ``start`` returns and answer 503 (with Retry-After) until each is ready; otherwise
    ``start`` returns once every model has loaded or failed.
    """

    def __init__(
        self,
        models: Iterable[Model] = (),
        settings: Settings | None = None,
        graph: GraphSpec | None = None,
        graph_dir: Path | None = None,
        extra_routes: Sequence[Route] = (),
    ) -> None:
        """``extra_routes``: the route lists of further front-ends, served beside the v2 routes."""
        self.settings = settings or Settings()
        self.executor = ThreadPoolExecutor(self.settings.predict_threads, thread_name_prefix="v2serve-model")
        self.metrics = ServerMetrics()
        self.tracing = _tracing(self.settings)
        if self.tracing is not None:
            self.metrics.recorder_factory = self.tracing.recorder
        self.artifacts = ArtifactCache(self.settings.data, HubDownloads(self.settings.hub, self.settings.data))
        self.registry = ModelRegistry(self.executor, self.artifacts, self.metrics)
        self.metrics.watch_models(self.registry.gauges)
        for model in models:
            self.registry.add(model)
        self.data = DataFetcher(DataPolicy(self.settings.data))
        image_policy = self.settings.data.model_copy(update={"protocols": self.settings.ingrain.image_url_protocols})
        self.image_data = DataFetcher(DataPolicy(image_policy))
        """Ingrain's image URLs: the data policy with protocols of their own (public http(s) by default)."""
        self.core = ServerCore(
            self.registry,
            info=ServerInfo(
                name=self.settings.server_name,
                serves_graph=graph is not None,
                # What GET /v2 advertises is what answers: the repository's routes can be turned off.
                extensions=[e for e in EXTENSIONS if e != "model_repository" or self.settings.repository.enabled],
            ),
            debug=self.settings.debug,
            data=self.data,
            metrics=self.metrics,
            repository=RepositoryEndpoints(
                ModelRepository(self.registry, self.settings.repository.root, self.settings.implementation_packages),
                self.settings.repository,
                reachable_beyond_loopback=not is_loopback(self.settings.http.host),
                processes=self.settings.http.workers,
            ),
        )
        self.flow: Flow | None = None
        """A flow graph: it answers every request that is not about the server itself."""
        if graph is not None:
            compiled = GraphCompiler(self.core, Runner(self.executor), graph_dir).compile(graph)
            self.core.info.default_model = compiled.default_model
            self.core.info.listing = compiled.listing
            self.core.info.mlrun_router = compiled.mlrun_router
            self.flow = compiled.flow

        def extra(core: ServerCore) -> Sequence[Route]:
            return extra_routes

        frontends = frontends_of(self.settings, self.artifacts, self.image_data)
        self.dispatcher = Dispatcher(self.core, [v2_routes, extra, *frontends])
        self._loading: asyncio.Task[None] | None = None
        self._graph = graph
        self.handle: Callable[[Event], Awaitable[Reply]] = self._handle
        """Serve one Event (what every transport calls); traced when tracing is on."""
        if self.tracing is not None:
            self.handle = self.tracing.traced_handle(self._handle)
            if self.flow is not None:
                self.flow.wrap_steps(self.tracing.traced_step)
            self.data.propagate_with(self.tracing.inject)
            self.image_data.propagate_with(self.tracing.inject)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ModelServer:
        """The server ``settings.models`` describes (by default from ``V2SERVE_*`` variables).

        Targets ending in .yaml, .yml or .json (other than model-settings.json) are graph spec files (at most
        one); the others are model classes or model directories served beside the graph.
        """
        settings = settings or Settings()
        models, graph, graph_file = cls.read_targets(settings)
        return cls(models, settings, graph=graph, graph_dir=None if graph_file is None else graph_file.parent)

    @staticmethod
    def read_targets(settings: Settings) -> tuple[list[Model], GraphSpec | None, Path | None]:
        """The models, graph spec and graph file ``settings.models`` names, read without building a server
        (the command line checks them so once before starting workers): ValueError or ImportError for the
        first target that is wrong."""
        graph_files = [Path(t).resolve() for t in settings.models if is_graph_file(t)]
        if len(graph_files) > 1:
            raise ValueError(f"serve one graph at a time, not {[str(f) for f in graph_files]}")
        packages = settings.implementation_packages
        models = [
            model
            for target in settings.models
            if not is_graph_file(target)
            for model in models_from_target(target, packages, settings.model_store)
        ]
        if not graph_files:
            return models, None, None
        return models, GraphSpec.from_file(graph_files[0]), graph_files[0]

    def summary(self) -> str:
        """What this process serves, for the log once it has started: where it listens, the front-ends that
        are on, the streams it consumes, and each model with its state (and why, when it failed)."""
        settings = self.settings
        http, grpc, ingrain = settings.http, settings.grpc, settings.ingrain
        frontends = ["v2"]
        named = [
            (settings.frontends.torchserve, "TorchServe"),
            (settings.frontends.kserve_v1, "KServe v1"),
            (ingrain.enabled, "Ingrain"),
            (settings.frontends.docs, "docs at /v2/docs"),
        ]
        frontends += [name for on, name in named if on]
        lines = [f"{self.core.info.name} {__version__}, process {os.getpid()}, serving:"]
        lines.append(f"  HTTP      http://{_host(http.host)}:{http.port}  {', '.join(frontends)}")
        if ingrain.inference_port is not None or ingrain.model_port is not None:
            lines.append(f"  Ingrain   inference port {ingrain.inference_port}, model port {ingrain.model_port}")
        torchserve = settings.torchserve
        if torchserve.management_port is not None or torchserve.metrics_port is not None:
            lines.append(
                f"  TorchServe management port {torchserve.management_port}, metrics port {torchserve.metrics_port}"
            )
        if grpc.port is not None:
            lines.append(f"  gRPC      {_host(grpc.host or http.host)}:{grpc.port}")
        kafka, kinesis = settings.kafka, settings.kinesis
        if kafka.bootstrap_servers:
            topics = ", ".join(kafka.input_topics)
            lines.append(f"  Kafka     {topics} at {kafka.bootstrap_servers} -> {kafka.output_topic} "
                         f"(errors: {kafka.error_topic})")  # fmt: skip
        if kinesis.input_stream:
            lines.append(
                f"  Kinesis   {kinesis.input_stream} -> {kinesis.output_stream} (errors: {kinesis.error_stream})"
            )
        if self._graph is not None:
            lines.append(f"  graph     {self._graph.topology} of {len(self._graph.steps)} steps")
        entries = list(self.registry)
        for entry in entries:
            label = entry.name if entry.version is None else f"{entry.name}:{entry.version}"
            if entry.state is ModelState.READY:
                state = f"READY in {entry.load_seconds:.2f} s"
            else:
                state = entry.state.value + (f": {entry.reason}" if entry.reason else "")
            lines.append(f"  model     {label}  {state}")
        if not entries:
            lines.append("  model     none yet (the repository API loads them)")
        return "\n".join(lines)

    async def start(self) -> None:
        if self.settings.http.peers_dir:
            peers = WorkerPeers(self.settings.http.peers_dir, self._metrics_snapshot)
            await peers.start()
            self.metrics.peers = peers
        if self.settings.load_in_background:
            self._loading = asyncio.create_task(self.registry.load_all())
        else:
            await self.registry.load_all()
        logger.info("%s", self.summary())

    def when_loaded(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the models ``start`` loads have loaded: now, or when the background load
        (``load_in_background``) ends."""
        if self._loading is None or self._loading.done():
            callback()
        else:
            self._loading.add_done_callback(lambda _: callback())

    def _metrics_snapshot(self) -> Snapshot:
        return {"samples": self.metrics.samples(), "statistics": self.core.dataplane.statistics()}

    async def stop(self) -> None:
        if self.metrics.peers is not None:
            await self.metrics.peers.stop()
            self.metrics.peers = None
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        await self.registry.unload_all()
        await self.data.close()
        await self.image_data.close()
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def _handle(self, event: Event) -> Reply:
        request_id = event.headers.get("x-request-id")
        # Everything logged while serving this event carries its id (tasks it starts inherit the context). An
        # event without one keeps the context's ("-" in a transport's task): no context copy per request.
        label = request_id or event.id
        token = REQUEST_ID.set(label) if label else None
        try:
            if self.flow is None or self.dispatcher.is_server_request(event):
                reply = await self.dispatcher.handle(event)
            elif event.method == "GET" and event.path.rstrip("/").endswith("/ready"):
                # A readiness probe on any path of a flow (MLRun's ``<step>/ready``) asks about the server: it
                # is answered as /v2/health/ready is, never by running the flow on an empty body.
                reply = await self.dispatcher.handle(dataclasses.replace(event, path=READY_PATH))
            else:
                reply = await self.flow.handle(event)
        finally:
            if token is not None:
                REQUEST_ID.reset(token)
        if request_id is not None:
            reply.headers["x-request-id"] = request_id
        return reply


def frontends_of(settings: Settings, artifacts: ArtifactCache, images: DataFetcher | None = None) -> list[FrontEnd]:
    """The front-ends beside v2 that the settings turn on (their routes may replace v2's: ``GET /``);
    ``images`` reads Ingrain's image URLs."""
    frontends: list[FrontEnd] = []
    if settings.frontends.torchserve:
        frontends.append(torchserve_routes)
    if settings.frontends.kserve_v1:
        frontends.append(kserve_v1_routes)
    if settings.frontends.docs:
        frontends.append(docs_routes)
    torchserve = settings.torchserve
    if torchserve.management_port is not None or torchserve.metrics_port is not None:

        def torchserve_ports(core: ServerCore) -> list[Route]:
            return torchserve_management_routes(core, settings.model_store)

        frontends.append(torchserve_ports)
    if settings.ingrain.enabled:
        catalogue = ModelCatalogue(settings.repository.root, settings.implementation_packages, artifacts.hub)

        def ingrain_model_routes(core: ServerCore) -> list[Route]:
            endpoints = IngrainModelEndpoints(core, catalogue, artifacts, settings.ingrain.max_loaded_models)
            return endpoints.routes()

        def ingrain_inference_routes(core: ServerCore) -> list[Route]:
            return ingrain_routes(core, images)

        frontends += [ingrain_inference_routes, ingrain_model_routes]
    return frontends


READY_PATH = "/v2/health/ready"


def _tracing(settings: Settings) -> Tracing | None:
    if not settings.tracing.enabled:
        return None  # nothing of OpenTelemetry is imported
    from v2serve.tracing import Tracing

    try:
        return Tracing(settings.tracing)
    except ImportError as exc:
        raise ImportError(f"tracing needs the otel extra: {install_hint('otel')} ({exc})") from None


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def is_graph_file(target: str) -> bool:
    path = Path(target)
    return path.suffix in (".yaml", ".yml", ".json") and path.name != SETTINGS_FILE and path.is_file()


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything

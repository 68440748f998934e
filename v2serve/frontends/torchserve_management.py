"""TorchServe's management API, on a port of its own (``torchserve.management_port``; TorchServe's 8081),
and its metrics port (``torchserve.metrics_port``; 8082: ``GET /metrics``, Prometheus text).

- ``POST /models?url=<file>.mar`` registers an archive of the model store (``model_name``,
  ``initial_workers``, ``batch_size``, ``max_batch_delay``, ``response_timeout`` override its config); a
  version that is registered already is a 409, as in TorchServe.
- ``GET /models`` lists models (``limit``, ``next_page_token``); ``GET /models/{m}``, ``/{m}/{v}`` and
  ``/{m}/all`` describe versions as TorchServe does.
- ``PUT /models/{m}[/{v}]?min_worker=N`` scales an archive: it is loaded again with N instances beside the
  one serving, which is swapped out once the new one is ready.
- ``PUT /models/{m}/{v}/set-default`` chooses the version requests without one get.
- ``DELETE /models/{m}[/{v}]`` unregisters (the default version alone only when it is the last).

Everything that changes what is served follows the repository API's rules (a token, or loopback only; 409
with several worker processes). Differences from TorchServe: a registration without ``initial_workers``
starts the archive's own worker count (TorchServe registers it with none, and answers 503 until it is
scaled); every change is synchronous (``synchronous=false`` is answered when it is done); ``url`` names an
archive in the model store, never a URL to download.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from v2serve.core.routes import Handler, Route, errors_rendered
from v2serve.core.server_core import ServerCore
from v2serve.engine.registry import ModelEntry, ModelState
from v2serve.errors import Conflict, Forbidden, InvalidRequest, ModelNotFound
from v2serve.event import Event, Reply
from v2serve.frontends.torchserve import torchserve_error
from v2serve.metrics.server import PROMETHEUS_CONTENT_TYPE
from v2serve.models.torchserve import ARCHIVE_SUFFIX, TorchServeArchive

MANAGEMENT = "torchserve-management"
METRICS = "torchserve-metrics"
"""The listeners (``Event.listener``) of TorchServe's management and metrics ports."""
MAX_PAGE = 1000
_DEFAULT_PAGE = 100


class DefaultVersionInUse(Forbidden):
    """Unregistering the default version while others remain: set another default first (TorchServe's 403)."""

    torchserve_type = "InvalidModelVersionException"


class TorchServeManagement:
    """The handlers of TorchServe's management API over the server core."""

    def __init__(self, core: ServerCore, model_store: str | None) -> None:
        self._core = core
        self._registry = core.registry
        self._store = None if model_store is None else Path(model_store).expanduser().resolve()
        self._registered: set[tuple[str, str | None]] = set()
        """Versions registered through this API (TorchServe's ``loadedAtStartup`` is false for them)."""

    def routes(self) -> list[Route]:
        def route(method: str, path: str, handler: Handler, summary: str) -> Route:
            return Route(method, path, errors_rendered(handler, torchserve_error), summary, server_level=True,
                         listener=MANAGEMENT, request_required=False, errors=(400, 404, 409))  # fmt: skip

        return [
            route("POST", "/models", self.register, "Register a model archive of the model store"),
            route("GET", "/models", self.list_models, "List models (limit, next_page_token)"),
            route("GET", "/models/{model}", self.describe, "Describe a model's default version"),
            route("GET", "/models/{model}/{version}", self.describe, "Describe a version (or all)"),
            route("PUT", "/models/{model}", self.scale, "Scale a model's workers (min_worker)"),
            route("PUT", "/models/{model}/{version}", self.scale, "Scale a version's workers (min_worker)"),
            route("PUT", "/models/{model}/{version}/set-default", self.set_default, "Set the default version"),
            route("DELETE", "/models/{model}", self.unregister, "Unregister a model's default version"),
            route("DELETE", "/models/{model}/{version}", self.unregister, "Unregister a version"),
            Route("GET", "/metrics", self.metrics, "Prometheus metrics", listener=METRICS, server_level=True),
        ]

    async def register(self, event: Event, params: Mapping[str, str]) -> Reply:
        self._authorize(event)
        query = _query(event)
        archive = self._archive(query.get("url"))
        workers = _count(query, "initial_workers", minimum=0)
        options: dict[str, Any] = {
            "instances": workers or None,
            "max_batch_size": _count(query, "batch_size", minimum=1),
            "max_batch_delay_ms": _count(query, "max_batch_delay", minimum=0),
            "timeout_s": _count(query, "response_timeout", minimum=1),
        }
        if options["max_batch_size"] == 1:
            options["max_batch_size"] = 0  # a batch of one is no batching
        try:
            model = TorchServeArchive(name=query.get("model_name") or None, model_path=str(archive), **options)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        registered = self._registry.entries_of(model.name)
        if any(entry.version == model.version for entry in registered):
            raise Conflict(f"Model version {model.version} is already registered for model {model.name}")
        current = self._registry.default_version(model.name) if registered else None
        if current is not None:
            # TorchServe's default stays the version registered first until set-default changes it.
            self._registry.set_default(model.name, current)
        await self._registry.load_and_swap(model)
        self._registered.add((model.name, model.version))
        status = f'Model "{model.name}" Version: {model.version} registered with {model.instances} initial workers'
        return Reply.json({"status": status})

    async def list_models(self, event: Event, params: Mapping[str, str]) -> Reply:
        query = _query(event)
        limit = min(_count(query, "limit", minimum=1) or _DEFAULT_PAGE, MAX_PAGE)
        start = _count(query, "next_page_token", minimum=0) or 0
        names = sorted(self._registry.names())
        page = names[start : start + limit]
        body: dict[str, Any] = {}
        if start + limit < len(names):
            body["nextPageToken"] = str(start + limit)
        body["models"] = [{"modelName": name, "modelUrl": _url(self._registry.resolve(name))} for name in page]
        return Reply.json(body)

    async def describe(self, event: Event, params: Mapping[str, str]) -> Reply:
        version = params.get("version")
        if version == "all":
            entries = self._registry.entries_of(params["model"])
            if not entries:
                raise ModelNotFound(f"Model not found: {params['model']}")
        else:
            entries = [self._core.resolve(params["model"], version)]
        return Reply.json([self._description(entry) for entry in entries])

    async def scale(self, event: Event, params: Mapping[str, str]) -> Reply:
        self._authorize(event)
        entry = self._core.resolve(params["model"], params.get("version"))
        query = _query(event)
        workers = _count(query, "min_worker", minimum=0) or _count(query, "max_worker", minimum=0)
        if workers is None:
            raise InvalidRequest("scale workers needs min_worker (or max_worker)")
        if workers == 0:
            raise InvalidRequest(
                "v2serve serves a registered model with at least one worker: unregister it (DELETE) to stop it"
            )
        model = entry.model
        if not isinstance(model, TorchServeArchive):
            raise InvalidRequest(
                f"model {entry.name!r} is not a TorchServe archive: its instances are set in its class"
            )
        if workers != model.instances:
            replacement = TorchServeArchive(
                name=model.name, version=model.version, model_path=str(model.model_path), instances=workers,
                max_batch_size=model.max_batch_size, max_batch_delay_ms=model.max_batch_delay_ms,
                timeout_s=model.timeout_s,
            )  # fmt: skip
            await self._registry.load_and_swap(replacement)
        return Reply.json({"status": f"Workers scaled to {workers} for model: {entry.name}"})

    async def set_default(self, event: Event, params: Mapping[str, str]) -> Reply:
        self._authorize(event)
        name, version = params["model"], params["version"]
        self._core.resolve(name, version)
        self._registry.set_default(name, version)
        return Reply.json({"status": f'Default version successfully updated for model "{name}" to "{version}"'})

    async def unregister(self, event: Event, params: Mapping[str, str]) -> Reply:
        self._authorize(event)
        name = params["model"]
        entry = self._core.resolve(name, params.get("version"))
        if len(self._registry.entries_of(name)) > 1 and entry.version == self._registry.default_version(name):
            raise DefaultVersionInUse(f"Cannot remove default version for model {name}")
        await self._registry.remove(entry)
        self._registered.discard((entry.name, entry.version))
        return Reply.json({"status": f'Model "{name}" unregistered'})

    async def metrics(self, event: Event, params: Mapping[str, str]) -> Reply:
        return Reply(200, await self._core.metrics_text(), PROMETHEUS_CONTENT_TYPE)

    def _authorize(self, event: Event) -> None:
        repository = self._core.repository
        if repository is None:
            raise Forbidden("this server does not load or unload models while it runs")
        repository.authorize_change(event)

    def _archive(self, url: str | None) -> Path:
        if not url:
            raise InvalidRequest("Parameter url is required.")
        if "://" in url:
            raise InvalidRequest(f"{url!r}: v2serve registers archives of its model store only; download it there")
        if self._store is None:
            raise InvalidRequest("this server has no model store (--model-store) to register archives from")
        archive = (self._store / url).resolve()
        if not archive.is_relative_to(self._store) or archive.suffix != ARCHIVE_SUFFIX:
            raise InvalidRequest(f"{url!r} is not a .mar file of the model store")
        if not archive.is_file():
            raise ModelNotFound(f"Model not found at: {url}")
        return archive

    def _description(self, entry: ModelEntry) -> dict[str, Any]:
        model = entry.model
        ready = entry.state is ModelState.READY
        description: dict[str, Any] = {
            "modelName": entry.name,
            "modelVersion": entry.version,
            "modelUrl": _url(entry),
            "runtime": "python",
            "minWorkers": model.instances,
            "maxWorkers": model.instances,
            "batchSize": max(1, model.max_batch_size),
            "maxBatchDelay": int(model.max_batch_delay_ms),
        }
        if model.timeout_s is not None:
            description["responseTimeout"] = int(model.timeout_s)
        if isinstance(model, TorchServeArchive):
            description["deviceType"] = "gpu" if model.gpu_id is not None else "cpu"
        description["loadedAtStartup"] = (entry.name, entry.version) not in self._registered
        description["workers"] = [
            {"id": str(9000 + index), "status": "READY" if ready else "UNLOADING" if entry.state is
             ModelState.UNLOADED else entry.state.value, "memoryUsage": 0, "pid": os.getpid(),
             "gpu": description.get("deviceType") == "gpu", "gpuUsage": "N/A"}
            for index in range(model.instances)
        ]  # fmt: skip
        waiting = entry.scheduler.waiting
        description["jobQueueStatus"] = {
            "remainingCapacity": max(model.max_queue_size - waiting, 0),
            "pendingRequests": waiting,
        }
        return description


def torchserve_management_routes(core: ServerCore, model_store: str | None) -> list[Route]:
    return TorchServeManagement(core, model_store).routes()


def _url(entry: ModelEntry) -> str:
    path = entry.model.model_path
    return Path(path).name if path and isinstance(entry.model, TorchServeArchive) else (path or "")


def _query(event: Event) -> dict[str, str]:
    try:
        fields = parse_qs(event.query, max_num_fields=64)
    except ValueError as exc:
        raise InvalidRequest(f"the query string is malformed: {exc}") from None
    return {name: values[-1] for name, values in fields.items()}


def _count(query: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) < minimum or int(value) > 1_000_000:
        raise InvalidRequest(f"{name} must be a whole number from {minimum}, not {value!r}")
    return int(value)

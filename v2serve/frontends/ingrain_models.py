"""Ingrain's model API, mapped onto the model registry: load, unload and list models by Ingrain's names.

``POST /load_sentence_transformer_model``, ``/load_timm_model``, ``/load_clip_model`` and (newer releases)
``/load_model`` with ``library``; ``POST /unload_model``; ``DELETE /delete_model``; ``GET /loaded_models``,
``/repository_models``, ``/model_embedding_size`` and ``/model_classification_labels`` (``?name=``); ``POST
/download_custom_model``.

- A name is found offline by the ``ModelCatalogue`` (the repository, packaged models, the local Hugging
  Face cache), or is a 404 at once that says where the server looked.
- A load registers the model beside whatever serves its name and swaps it in only once it is ready: a load
  that fails leaves the old one serving, and answers the reason.
- An unloaded model stays in ``/repository_models`` (``UNAVAILABLE``) until ``delete_model``, which also
  works on it, as Ingrain's does.
- At most ``max_loaded_models`` models loaded through these routes stay loaded: after a load, the least
  recently used of them (by its last inference, or its load when it has none) is unloaded. The models the
  server started with are not counted and never unloaded.
- Loading, unloading, deleting and downloading follow the repository API's rules: with
  ``repository.token`` set they need ``Authorization: Bearer <token>`` (the ``ingrain`` client takes extra
  headers: ``Client(header=[...])``); without one, only a server bound to loopback takes them; with several
  worker processes they are refused (409).
- ``download_custom_model`` reads a safetensors file through the ``data_url`` policy (protocols, private
  addresses, size, time-out) into the artifact cache, under ``pretrained_name``; a later load that names it
  as ``pretrained`` loads the model's architecture with those weights.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from v2serve.core.routes import Handler, Route
from v2serve.core.server_core import ServerCore
from v2serve.data.artifacts import ArtifactCache
from v2serve.errors import Forbidden, InvalidRequest, ModelNotFound
from v2serve.event import Event, Reply
from v2serve.frontends.catalogue import LIBRARIES, ModelCatalogue, check_name
from v2serve.frontends.ingrain import in_ingrain_shape
from v2serve.models.embeddings import EmbeddingModel
from v2serve.models.images import ImageEmbeddingModel

_ROUTE_LIBRARIES = {
    "/load_sentence_transformer_model": "sentence_transformers",
    "/load_timm_model": "timm",
    "/load_clip_model": "open_clip",
}


@dataclass
class Loaded:
    """A model loaded through these routes: what it is, and when it was loaded (for least recently used)."""

    library: str
    loaded_at_ms: int


@dataclass(frozen=True)
class CustomWeights:
    library: str
    path: str
    url: str


class IngrainModelEndpoints:
    """The handlers of Ingrain's model routes."""

    def __init__(
        self, core: ServerCore, catalogue: ModelCatalogue, artifacts: ArtifactCache, max_loaded_models: int
    ) -> None:
        self._core = core
        self._registry = core.registry
        self._catalogue = catalogue
        self._artifacts = artifacts
        self._max_loaded = max_loaded_models
        self._loaded: dict[str, Loaded] = {}
        self._unloaded: set[str] = set()
        """Models unloaded through these routes: Ingrain lists them with their state until they are deleted."""
        self._custom: dict[str, CustomWeights] = {}
        self._lock = asyncio.Lock()

    def routes(self) -> list[Route]:
        def route(method: str, path: str, handler: Handler, summary: str) -> Route:
            return Route(method, path, in_ingrain_shape(handler), summary, errors=(400, 404, 409, 500),
                         server_level=True, request_content=None if method == "GET" else _JSON)  # fmt: skip

        routes = [route("POST", path, self.load, f"Load a {library} model, Ingrain style")
                  for path, library in _ROUTE_LIBRARIES.items()]  # fmt: skip
        return [
            *routes,
            route("POST", "/load_model", self.load, "Load a model of a library, Ingrain style"),
            route("POST", "/unload_model", self.unload, "Unload a model, Ingrain style"),
            route("DELETE", "/delete_model", self.delete, "Unload a model and forget its downloaded weights"),
            route("GET", "/loaded_models", self.loaded_models, "The models loaded, Ingrain style"),
            route("GET", "/repository_models", self.repository_models, "The models in the repository"),
            route("GET", "/model_embedding_size", self.embedding_size, "A model's embedding size (?name=)"),
            route("GET", "/model_classification_labels", self.labels, "A classifier's labels (?name=)"),
            route("POST", "/download_custom_model", self.download, "Download safetensors weights by URL"),
        ]

    async def load(self, event: Event, params: Mapping[str, str]) -> Reply:
        self._authorize_change(event)
        fields = event.body.json_object()
        name = _name(fields)
        library = _ROUTE_LIBRARIES.get(event.path) or fields.get("library")
        if not isinstance(library, str):
            raise InvalidRequest(f"'library' must be one of {', '.join(LIBRARIES)}")
        pretrained = fields.get("pretrained")
        custom = self._custom.get(pretrained) if isinstance(pretrained, str) else None
        # Ingrain ignores pretrained for sentence-transformers; elsewhere it names downloaded weights, an
        # open_clip tag, or (timm) true or false.
        wanted = None if library == "sentence_transformers" or custom is not None else pretrained
        # In a thread, all of it: finding a timm or open_clip name imports the library (seconds, the first time),
        # and a download takes longer; the old model serves on meanwhile.
        loop = asyncio.get_running_loop()
        find = partial(self._catalogue.model, name, library, wanted, weights_given=custom is not None)
        try:
            model = await loop.run_in_executor(None, find)
        except ModelNotFound:
            if not await loop.run_in_executor(None, self._catalogue.downloads, name, library, wanted):
                raise
            model = await loop.run_in_executor(None, self._catalogue.hub_model, name, library, wanted)
        if custom is not None:
            if not isinstance(model, EmbeddingModel):
                raise InvalidRequest(f"model {name!r} cannot take downloaded weights")
            model.weights_file = custom.path
            model.checkpoint = pretrained
        elif isinstance(pretrained, str) and library == "timm":
            downloaded = ", ".join(sorted(self._custom)) or "none"
            raise ModelNotFound(f"no downloaded weights are named {pretrained!r} (downloaded: {downloaded})")
        async with self._lock:
            await self._registry.load_and_swap(model)
            self._loaded[name] = Loaded(library, _now_ms())
            self._unloaded.discard(name)
            await self._evict(keep=name)
        return Reply.json({"message": f"Model {name} loaded successfully."})

    async def unload(self, event: Event, params: Mapping[str, str]) -> Reply:
        self._authorize_change(event)
        name = _name(event.body.json_object())
        await self._unload(name)
        return Reply.json({"message": f"Model {name} unloaded successfully."})

    async def delete(self, event: Event, params: Mapping[str, str]) -> Reply:
        self._authorize_change(event)
        fields = event.body.json_object()
        name = _name(fields)
        custom = self._custom.pop(name, None)
        if custom is not None:
            Path(custom.path).unlink(missing_ok=True)
        if self._registry.entries_of(name):
            await self._unload(name)
        if name not in self._unloaded and custom is None:
            raise ModelNotFound(f"model {name!r} is neither loaded, unloaded nor downloaded")
        self._unloaded.discard(name)
        return Reply.json({"message": f"Model {name} deleted successfully."})

    async def loaded_models(self, event: Event, params: Mapping[str, str]) -> Reply:
        models = []
        for name in self._registry.names():
            loaded = self._loaded.get(name)
            model = self._registry.resolve(name).model
            library = loaded.library if loaded else getattr(model, "library", model.platform)
            models.append({"name": name, "library": library})
        return Reply.json({"models": models})

    async def repository_models(self, event: Event, params: Mapping[str, str]) -> Reply:
        repository = self._core.repository
        if repository is not None:
            index = [(row["name"], row["state"]) for row in repository.repository.index()]
        else:
            index = [(entry.name, entry.state.value) for entry in self._registry]
        states: dict[str, str] = {}
        unloaded = ((name, "UNAVAILABLE") for name in self._unloaded)  # Triton's state for an unloaded model
        for name, state in [*index, *unloaded, *((name, "DOWNLOADED") for name in self._custom)]:
            states.setdefault(name, state)  # one row a name, as Ingrain lists them (the index has one a version)
        return Reply.json({"models": [{"name": name, "state": state} for name, state in states.items()]})

    async def embedding_size(self, event: Event, params: Mapping[str, str]) -> Reply:
        model = self._registry.resolve(_query_name(event)).model
        if not isinstance(model, EmbeddingModel):
            raise InvalidRequest(f"model {model.name!r} is not an embedding model")
        return Reply.json({"embeddingSize": model.dimensions})

    async def labels(self, event: Event, params: Mapping[str, str]) -> Reply:
        model = self._registry.resolve(_query_name(event)).model
        if not isinstance(model, ImageEmbeddingModel) or model.labels is None:
            raise InvalidRequest(f"model {model.name!r} does not classify images")
        return Reply.json({"labels": model.labels})

    async def download(self, event: Event, params: Mapping[str, str]) -> Reply:
        self._authorize_change(event)
        fields = event.body.json_object()
        library, name, url = fields.get("library"), fields.get("pretrained_name"), fields.get("safetensors_url")
        if library not in LIBRARIES:
            raise InvalidRequest(f"'library' must be one of {', '.join(LIBRARIES)}")
        if not isinstance(name, str) or not isinstance(url, str):
            raise InvalidRequest("'pretrained_name' and 'safetensors_url' must be strings")
        check_name(name)
        if not url.split("?", 1)[0].endswith(".safetensors"):
            raise InvalidRequest("safetensors_url must name a .safetensors file (no pickled weights)")
        if self._core.data is None:
            raise InvalidRequest("this server reads no URLs")
        data = await self._core.data.read(url)
        loop = asyncio.get_running_loop()
        path = await loop.run_in_executor(None, self._artifacts.store, url, data)
        self._custom[name] = CustomWeights(str(library), path, url)
        return Reply.json({"message": f"Model {name} downloaded successfully."})

    def _authorize_change(self, event: Event) -> None:
        """The repository API's rules (token, loopback, one process) hold for these routes too."""
        repository = self._core.repository
        if repository is None:
            raise Forbidden("this server does not load or unload models while it runs")
        repository.authorize_change(event)

    async def _unload(self, name: str) -> None:
        entries = self._registry.entries_of(name)
        if not entries:
            raise ModelNotFound(f"model {name!r} is not loaded")
        self._loaded.pop(name, None)
        self._unloaded.add(name)
        for entry in entries:
            await self._registry.remove(entry)

    async def _evict(self, keep: str) -> None:
        """Unload the least recently used models loaded here, until at most ``max_loaded_models`` are."""
        while len(self._loaded) > self._max_loaded:
            candidates = [name for name in self._loaded if name != keep]
            if not candidates:
                return
            coldest = min(candidates, key=self._last_used_ms)
            await self._unload(coldest)

    def _last_used_ms(self, name: str) -> int:
        loaded = self._loaded[name]
        entries = self._registry.entries_of(name)
        last = max((entry.stats.last_inference_ms for entry in entries), default=0)
        return max(last, loaded.loaded_at_ms)


def _name(fields: Mapping[str, Any]) -> str:
    name = fields.get("name")
    if not isinstance(name, str):
        raise InvalidRequest("'name' must be the model's name")
    check_name(name)
    return name


def _query_name(event: Event) -> str:
    names = parse_qs(event.query, max_num_fields=16).get("name")
    if not names:
        raise InvalidRequest("name the model: ?name=...")
    return names[0]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_JSON = {"application/json": {"schema": {"type": "object"}}}

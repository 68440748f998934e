"""Models by name and version, each with an honest readiness state."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from v2serve.data.artifacts import ArtifactCache
from v2serve.engine.invoker import ModelInvoker
from v2serve.engine.scheduler import Scheduler, make_scheduler
from v2serve.errors import ModelLoadFailed, ModelNotFound, ModelNotReady, ModelVersionNotFound, V2ServeError
from v2serve.metrics.model import ModelGauge, ModelRecorder
from v2serve.metrics.server import ServerMetrics
from v2serve.models.base import Model, RequestContext
from v2serve.protocol.datatypes import DATATYPE_TO_NUMPY
from v2serve.protocol.schema import ModelSchema

logger = logging.getLogger("v2serve.models")


class ModelState(str, Enum):
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADED = "UNLOADED"


@dataclass(eq=False)
class ModelEntry:
    """One registered model version and what is known about its readiness."""

    model: Model
    invoker: ModelInvoker
    scheduler: Scheduler
    stats: ModelRecorder
    state: ModelState = ModelState.LOADING
    reason: str | None = None
    load_seconds: float | None = None
    loaded_at: float | None = None
    """When it became ready (``time.time()``)."""
    active: int = 0
    """Requests being served by this entry: an entry is unloaded only once none is left."""
    _idle: asyncio.Event | None = None
    schema: ModelSchema = field(init=False)
    """The model's tensors, indexed again once it has loaded (a runtime may derive them from its file)."""

    def __post_init__(self) -> None:
        self.schema = schema_of(self.model)

    def enter(self) -> None:
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0 and self._idle is not None:
            self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no request is being served by this entry; False if some still were after the timeout."""
        if self.active == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str | None:
        return self.model.version

    def serving(self, label: str, *, inference: bool = True) -> Serving:
        """The accounting of one request on this version: ``with entry.serving("infer") as call: ...; call.status
        = 200``. It counts the request as in flight, and when the block ends records its duration under
        ``label`` with its status (a V2ServeError's, else 500 unless the block set one)."""
        return Serving(self, label, inference)

    def require_ready(self) -> None:
        if self.state is ModelState.READY:
            return
        label = _label(self.name, self.version)
        if self.state is ModelState.FAILED:
            raise ModelNotReady(f"model {label} failed to load: {self.reason}", retry_after_s=30)
        raise ModelNotReady(f"model {label} is {self.state.value.lower()}", retry_after_s=1)


class Serving:
    """One request's accounting (``ModelEntry.serving``): a plain synchronous context, as cheap as the
    try/finally it replaces. The request counts from the moment it is created; use it in a ``with``."""

    __slots__ = ("entry", "inference", "label", "started", "status")

    def __init__(self, entry: ModelEntry, label: str, inference: bool) -> None:
        self.entry = entry
        self.label = label
        self.inference = inference
        self.status = 500
        self.started = time.perf_counter_ns()
        entry.active += 1  # entry.enter(), inline: this runs for every request

    def __enter__(self) -> Serving:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        if error is not None:
            if isinstance(error, V2ServeError):
                self.status = error.status_code
            elif isinstance(error, GeneratorExit):
                self.status = 499  # the consumer went away (nginx's "client closed request")
        entry = self.entry
        entry.active -= 1  # entry.leave(), inline
        if entry.active == 0 and entry._idle is not None:
            entry._idle.set()
        entry.stats.finished(self.started, self.label, self.status, inference=self.inference)


PROGRESS_EVERY_S = 10.0
"""A load that takes longer says so in the log, at this interval and then at double it each time (to 5 min)."""


async def _still_loading(label: str, started: float) -> None:
    wait = PROGRESS_EVERY_S
    while True:
        await asyncio.sleep(wait)
        logger.info("model %s still loading, %.0f s so far", label, time.perf_counter() - started)
        wait = min(wait * 2, 300.0)


def schema_of(model: Model) -> ModelSchema:
    return ModelSchema.of(model.name, model.inputs, model.outputs, model.feature_names)


async def _warm_up(entry: ModelEntry) -> None:
    model = entry.model
    if not model.warmup_inputs:
        return
    datatypes = {spec.name: spec.datatype for spec in model.inputs}
    inputs = {
        name: np.asarray(value, dtype=DATATYPE_TO_NUMPY[datatypes[name]] if name in datatypes else None)
        for name, value in model.warmup_inputs.items()
    }
    try:
        await entry.invoker.predict(inputs, RequestContext(id="warm-up"))
    except Exception as exc:
        raise RuntimeError(f"warm-up failed: {type(exc).__name__}: {exc}") from exc


def _label(name: str, version: str | None) -> str:
    return repr(name) if version is None else f"{name!r} version {version!r}"


def version_sort_key(version: str | None) -> tuple[int, int, str]:
    """Versions order numerically when they are integers, otherwise as text; no version sorts first."""
    if version is None:
        return (0, 0, "")
    if version.isdigit():
        return (2, int(version), version)
    return (1, 0, version)


class ModelRegistry:
    """Registered models by name, then version.

    A request without a version goes to the model's default version: the one ``set_default`` chose, else
    the highest, where integer versions compare numerically ("10" > "9") and outrank non-integer ones,
    which compare as text.
    """

    def __init__(
        self, executor: Executor, artifacts: ArtifactCache | None = None, metrics: ServerMetrics | None = None
    ) -> None:
        self._executor = executor
        self._artifacts = artifacts
        self._metrics = metrics
        self._models: dict[str, dict[str | None, ModelEntry]] = {}
        self._defaults: dict[str, str] = {}

    def add(self, model: Model) -> ModelEntry:
        versions = self._models.setdefault(model.name, {})
        if model.version in versions:
            raise ValueError(f"model {_label(model.name, model.version)} is registered twice")
        entry = self._new_entry(model)
        versions[model.version] = entry
        return entry

    def _new_entry(self, model: Model) -> ModelEntry:
        invoker = ModelInvoker(model, self._executor)
        recorder = (self._metrics or ServerMetrics()).for_model(model.name, model.version)
        return ModelEntry(model, invoker, make_scheduler(invoker, recorder), recorder)

    async def load_and_swap(self, model: Model) -> ModelEntry:
        """Load ``model`` beside whatever serves its name and version now, and swap it in once it is ready.

        Until the swap, requests go to the old entry; after it, the old entry finishes the requests it has
        and is unloaded. A failed load registers nothing and raises ModelLoadFailed with the reason.
        """
        entry = self._new_entry(model)
        await self.load(entry)
        if entry.state is not ModelState.READY:
            await entry.scheduler.close()
            raise ModelLoadFailed(f"model {_label(model.name, model.version)} failed to load: {entry.reason}")
        versions = self._models.setdefault(model.name, {})
        old = versions.get(model.version)
        versions[model.version] = entry
        if old is not None:
            await self._retire(old)
        return entry

    async def remove(self, entry: ModelEntry) -> None:
        """Stop routing to ``entry``; unload it once the requests it is serving have finished."""
        versions = self._models.get(entry.name, {})
        if versions.get(entry.version) is entry:
            del versions[entry.version]
            if entry.name in self._defaults and self._defaults[entry.name] == entry.version:
                del self._defaults[entry.name]
            if not versions:
                del self._models[entry.name]
        await self._retire(entry)

    async def _retire(self, entry: ModelEntry, drain_timeout_s: float = 60.0) -> None:
        if not await entry.drained(drain_timeout_s):
            logger.warning(
                "unloading %s with %d request(s) still running", _label(entry.name, entry.version), entry.active
            )
        await self._unload(entry)

    async def load(self, entry: ModelEntry) -> None:
        """Load one model, recording READY or FAILED with the reason; never raises for a model's failure."""
        entry.state, entry.reason = ModelState.LOADING, None
        started = time.perf_counter()
        progress = asyncio.create_task(_still_loading(_label(entry.name, entry.version), started))
        try:
            await self._fetch_artifact(entry.model)
            await entry.invoker.load()
            await _warm_up(entry)
        except Exception as exc:
            entry.state, entry.reason = ModelState.FAILED, f"{type(exc).__name__}: {exc}"
            # A missing package is said in full by its message (which extra to install): no traceback.
            logger.error(
                "model %s failed to load: %s",
                _label(entry.name, entry.version),
                entry.reason,
                exc_info=not isinstance(exc, ImportError),
            )
        else:
            entry.schema = schema_of(entry.model)
            entry.state = ModelState.READY
            entry.load_seconds = time.perf_counter() - started
            entry.loaded_at = time.time()
            logger.info("model %s ready in %.3fs", _label(entry.name, entry.version), entry.load_seconds)
        finally:
            progress.cancel()

    async def _fetch_artifact(self, model: Model) -> None:
        """A model_path naming a remote URL is replaced by its local copy in the artifact cache."""
        path = model.model_path
        if self._artifacts is None or not path or "://" not in path or path.startswith("file://"):
            return
        loop = asyncio.get_running_loop()
        model.model_path = await loop.run_in_executor(self._executor, self._artifacts.local_path, path)

    async def load_all(self) -> None:
        await asyncio.gather(*(self.load(entry) for entry in self))

    async def unload_all(self) -> None:
        for entry in self:
            await self._unload(entry)

    async def _unload(self, entry: ModelEntry) -> None:
        await entry.scheduler.close()
        if entry.state is ModelState.READY:
            try:
                await entry.invoker.unload()
            except Exception:
                logger.exception("model %s failed to unload", _label(entry.name, entry.version))
        entry.state = ModelState.UNLOADED

    def resolve(self, name: str, version: str | None = None) -> ModelEntry:
        """The entry for ``name`` (at ``version``, or its default version); ModelNotFound names the rest."""
        if version is None and ":" in name and name not in self._models:  # a hub name keeps its colon
            name, version = name.split(":", 1)
        versions = self._models.get(name)
        if not versions and "--" in name:
            # A name with "/" (a Hugging Face name) cannot be one URL segment: URLs write it with "--", as the
            # Hugging Face cache and the repository name its folder.
            versions = self._models.get(name.replace("--", "/"))
        if not versions:
            available = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"model {name!r} does not exist; available models: {available}")
        if version is None:
            if len(versions) == 1:
                return next(iter(versions.values()))
            chosen = self._defaults.get(name)
            if chosen is not None and chosen in versions:
                return versions[chosen]
            return versions[max(versions, key=version_sort_key)]
        entry = versions.get(version)
        if entry is None:
            known = ", ".join(repr(v) for v in sorted(versions, key=version_sort_key) if v is not None)
            raise ModelVersionNotFound(f"model {name!r} has no version {version!r}; versions: {known or 'none'}")
        return entry

    def set_default(self, name: str, version: str) -> None:
        """Make ``version`` the one a request without a version gets (TorchServe's ``set-default``)."""
        self.resolve(name, version)  # ModelNotFound names what there is
        self._defaults[name] = version

    def default_version(self, name: str) -> str | None:
        """The version a request without one gets now."""
        return self.resolve(name).version

    def entries_of(self, name: str) -> list[ModelEntry]:
        """Every version of ``name``, lowest first."""
        versions = self._models.get(name, {})
        return [versions[v] for v in sorted(versions, key=version_sort_key)]

    def versions(self, name: str) -> list[str]:
        return [v for v in sorted(self._models.get(name, {}), key=version_sort_key) if v is not None]

    def names(self) -> list[str]:
        return list(self._models)

    def listing(self) -> list[str]:
        """Every served model as MLRun lists them: ``name``, or ``name:version`` for each version of a
        versioned model."""
        return [
            name if version is None else f"{name}:{version}"
            for name, versions in self._models.items()
            for version in sorted(versions, key=version_sort_key)
        ]

    def gauges(self) -> Iterator[ModelGauge]:
        """What each registered version is now, for the metrics at a scrape."""
        for entry in self:
            yield ModelGauge(
                entry.name,
                entry.version,
                entry.state.value,
                entry.load_seconds,
                entry.scheduler.waiting,
                entry.stats.running,
            )

    def __iter__(self) -> Iterator[ModelEntry]:
        for versions in self._models.values():
            yield from versions.values()

    def is_ready(self, allow_empty: bool = False) -> bool:
        """Ready when every registered model is READY, and (unless ``allow_empty``) there is at least one."""
        entries = list(self)
        return (allow_empty or bool(entries)) and all(entry.state is ModelState.READY for entry in entries)

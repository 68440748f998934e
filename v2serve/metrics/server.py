"""The metrics of one server: a recorder per model version, and the Prometheus registry built on demand."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from v2serve.metrics.model import ModelGauge, ModelRecorder
from v2serve.metrics.peers import WorkerPeers, merge_statistics

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """Recorders by (name, version), so that a reloaded version keeps counting where the replaced one
    stopped; several servers may share a process, each with its own."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], ModelRecorder] = {}
        # Requests that failed before they reached a served model (unknown path or model, malformed or
        # oversized body), by status.
        self._unrouted: dict[int, int] = {}
        self._gauges: Callable[[], Iterable[ModelGauge]] = tuple
        self._registry: Any = None
        self._collectors: list[Any] = []
        self.peers: WorkerPeers | None = None
        """The other worker processes of this server, when there are several (see ``peers.py``)."""
        self.recorder_factory: Callable[[str, str | None], ModelRecorder] = ModelRecorder
        """What records a model version's observations (tracing adds spans to the same observations)."""

    def for_model(self, name: str, version: str | None) -> ModelRecorder:
        key = (name, version or "")
        recorder = self._models.get(key)
        if recorder is None:
            recorder = self._models[key] = self.recorder_factory(name, version)
        return recorder

    def unrouted(self, status: int) -> None:
        """Count a request that failed before a served model was resolved."""
        self._unrouted[status] = self._unrouted.get(status, 0) + 1

    def watch_models(self, gauges: Callable[[], Iterable[ModelGauge]]) -> None:
        """Report the state, load time, queue depth and in-flight executions that ``gauges()`` gives at
        each scrape."""
        self._gauges = gauges

    def register(self, collector: Any) -> None:
        """Add a prometheus-client collector (a stream consumer's, say) to what ``render`` reports."""
        self._collectors.append(collector)
        if self._registry is not None:
            self._registry.register(collector)

    @property
    def registry(self) -> Any:
        """The prometheus-client registry, built (and prometheus_client imported) on first use."""
        if self._registry is None:
            from v2serve.metrics.prometheus import build_registry

            self._registry = build_registry(self._models, self._unrouted, lambda: self._gauges())
            for collector in self._collectors:
                self._registry.register(collector)
        return self._registry

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

    def samples(self) -> list[list[Any]]:
        """This process's samples, for a peer that adds them up (``render_total``)."""
        from v2serve.metrics.prometheus import samples

        return samples(self.registry)

    async def render_total(self) -> bytes:
        """The text exposition of every worker's metrics added up (this process's alone without peers)."""
        if self.peers is None:
            return self.render()
        from v2serve.metrics.prometheus import render_merged

        return render_merged([snapshot["samples"] for snapshot in await self.peers.snapshots()])

    async def statistics_total(self, local: dict[str, Any]) -> dict[str, Any]:
        """Triton statistics of every worker added up; ``local``: this process's (every model)."""
        if self.peers is None:
            return local
        return merge_statistics([snapshot["statistics"] for snapshot in await self.peers.snapshots()])

"""Prometheus metrics of the models a server holds, exposed at ``GET /metrics``.

Per-request observations (latencies, batch sizes, request counts) go to labelled children that are looked
up once per model version, so a request pays only for the observations themselves. Values that are
states rather than events (model state, load time, queue depth, requests in flight) are read from the
registry when Prometheus scrapes, so they can never drift from what the server really holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from v2serve.models.registry import ModelEntry

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MODEL_LABELS = ("model", "version")
# Seconds: from 100 µs (a tiny model's decode) to 30 s (a deadline's scale).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """The metric families of one server, in a registry of its own (several servers may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "v2serve_requests",
            "Requests served, by model, version, operation and status code.",
            [*MODEL_LABELS, "operation", "status"],
            registry=r,
        )
        self.failures = Counter(
            "v2serve_request_failures",
            "Requests that failed (status 400 and above), by model, version, operation and status code.",
            [*MODEL_LABELS, "operation", "status"],
            registry=r,
        )
        self.request_seconds = self._histogram("v2serve_request_duration_seconds", "Whole requests.", ["operation"])
        self.queue_seconds = self._histogram("v2serve_queue_wait_seconds", "Waiting for an instance or a batch.")
        self.decode_seconds = self._histogram(
            "v2serve_decode_seconds", "Pre-processing: parsing and decoding a request into arrays."
        )
        self.predict_seconds = self._histogram(
            "v2serve_predict_seconds", "One call of the model's preprocess, predict and postprocess (a batch is one)."
        )
        self.encode_seconds = self._histogram(
            "v2serve_encode_seconds", "Post-processing: encoding the outputs into a response."
        )
        self.batch_size = Histogram(
            "v2serve_batch_size",
            "Requests per model execution.",
            list(MODEL_LABELS),
            buckets=BATCH_BUCKETS,
            registry=r,
        )

    def _histogram(self, name: str, documentation: str, extra_labels: Iterable[str] = ()) -> Histogram:
        labels = [*MODEL_LABELS, *extra_labels]
        return Histogram(name, documentation, labels, buckets=LATENCY_BUCKETS, registry=self.registry)

    def for_model(self, name: str, version: str | None) -> ModelMetrics:
        return ModelMetrics(self, name, version or "")

    def watch_models(self, entries: Callable[[], Iterable[ModelEntry]]) -> None:
        """Report the state, load time, queue depth and in-flight requests of ``entries()`` at each scrape."""
        self.registry.register(_ModelStateCollector(entries))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelMetrics:
    """The labelled children of one model version: what the request path observes into."""

    __slots__ = ("_children", "_family", "batch_size", "decode", "encode", "labels", "predict", "queue_wait")

    def __init__(self, family: ServerMetrics, name: str, version: str) -> None:
        self._family = family
        self.labels = (name, version)
        self.queue_wait = family.queue_seconds.labels(name, version)
        self.decode = family.decode_seconds.labels(name, version)
        self.predict = family.predict_seconds.labels(name, version)
        self.encode = family.encode_seconds.labels(name, version)
        self.batch_size = family.batch_size.labels(name, version)
        self._children: dict[tuple[str, int], tuple[Any, Any, Any]] = {}

    def request(self, operation: str, status: int, seconds: float) -> None:
        children = self._children.get((operation, status))
        if children is None:
            family, labels = self._family, (*self.labels, operation, str(status))
            failures = family.failures.labels(*labels) if status >= 400 else None
            children = (
                family.requests.labels(*labels),
                failures,
                family.request_seconds.labels(*self.labels, operation),
            )
            self._children[(operation, status)] = children
        requests, failures, latency = children
        requests.inc()
        if failures is not None:
            failures.inc()
        latency.observe(seconds)


class _ModelStateCollector(Collector):
    def __init__(self, entries: Callable[[], Iterable[ModelEntry]]) -> None:
        self._entries = entries

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "v2serve_model_state", "1 for the state each model version is in.", labels=[*MODEL_LABELS, "state"]
        )
        load = GaugeMetricFamily("v2serve_model_load_seconds", "Time the last load took.", labels=list(MODEL_LABELS))
        queued = GaugeMetricFamily(
            "v2serve_queue_depth", "Requests waiting for an instance or a batch.", labels=list(MODEL_LABELS)
        )
        running = GaugeMetricFamily("v2serve_in_flight", "Requests being executed.", labels=list(MODEL_LABELS))
        for entry in self._entries():
            labels = [entry.name, entry.version or ""]
            state.add_metric([*labels, entry.state.value], 1)
            if entry.load_seconds is not None:
                load.add_metric(labels, entry.load_seconds)
            queued.add_metric(labels, entry.scheduler.waiting)
            running.add_metric(labels, entry.stats.running)
        yield from (state, load, queued, running)

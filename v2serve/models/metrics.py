"""Prometheus metrics of the models a server holds, exposed at ``GET /metrics``.

The request path only bumps plain counters and histogram buckets owned by one model version; prometheus-client
turns them into families when Prometheus scrapes. (Its own Counter and Histogram take a lock per increment
and walk every bucket: a tenth of a tiny request's cost. Here only the event loop writes, so no lock is
needed.) Values that are states rather than events (model state, load time, queue depth, requests in
flight) are read from the registry at scrape time, so they can never drift from what the server holds.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from v2serve.models.registry import ModelEntry

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MODEL_LABELS = ("model", "version")
# Seconds: from 100 µs (a tiny model's decode) to 30 s (a deadline's scale).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# Histograms of one model version: (attribute, metric name, help, buckets).
_MODEL_HISTOGRAMS = (
    ("queue_wait", "v2serve_queue_wait_seconds", "Waiting for an instance or a batch.", LATENCY_BUCKETS),
    ("decode", "v2serve_decode_seconds", "Pre-processing: parsing and decoding a request.", LATENCY_BUCKETS),
    (
        "predict",
        "v2serve_predict_seconds",
        "One call of the model's preprocess, predict and postprocess (a batch is one).",
        LATENCY_BUCKETS,
    ),
    ("encode", "v2serve_encode_seconds", "Post-processing: encoding the outputs.", LATENCY_BUCKETS),
    ("batch_size", "v2serve_batch_size", "Requests per model execution.", BATCH_BUCKETS),
)


class LoopHistogram:
    """A histogram written from one thread only (the event loop), so without a lock.

    Observations come in integer units ``scale`` times smaller than the rendered ones (nanoseconds for
    histograms of seconds), so the request path neither divides nor compares floats.
    """

    __slots__ = ("bounds", "counts", "limits", "scale", "total")

    def __init__(self, bounds: tuple[float, ...], scale: int = 1) -> None:
        self.bounds = bounds
        self.scale = scale
        self.limits = tuple(round(bound * scale) for bound in bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0

    def observe(self, value: int) -> None:
        self.counts[bisect.bisect_left(self.limits, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound, as Prometheus wants them."""
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return cumulative

    def sum(self) -> float:
        """The sum of the observations, in the rendered unit."""
        return self.total / self.scale


def _seconds() -> LoopHistogram:
    return LoopHistogram(LATENCY_BUCKETS, scale=1_000_000_000)


class ModelMetrics:
    """The observations of one model version: what the request path writes into."""

    __slots__ = ("batch_size", "decode", "encode", "labels", "predict", "queue_wait", "requests")

    def __init__(self, name: str, version: str) -> None:
        self.labels = [name, version]
        # Observed in nanoseconds, rendered in seconds.
        self.queue_wait = _seconds()
        self.decode = _seconds()
        self.predict = _seconds()
        self.encode = _seconds()
        self.batch_size = LoopHistogram(BATCH_BUCKETS)
        # (operation, status) -> [count, request-duration histogram]
        self.requests: dict[tuple[str, int], tuple[list[int], LoopHistogram]] = {}

    def request(self, operation: str, status: int, ns: int) -> None:
        counted = self.requests.get((operation, status))
        if counted is None:
            counted = self.requests[(operation, status)] = ([0], _seconds())
        counted[0][0] += 1
        counted[1].observe(ns)


class ServerMetrics:
    """The metrics of one server, in a registry of its own (several servers may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # By (name, version): a reloaded version keeps counting where the replaced one stopped.
        self._models: dict[tuple[str, str], ModelMetrics] = {}
        # Requests that failed before they reached a served model (unknown path or model, malformed or
        # oversized body), by status: labelled model="", version="", operation="unknown".
        self._unrouted: dict[int, int] = {}
        self.registry.register(_ModelMetricsCollector(self._models, self._unrouted))

    def unrouted(self, status: int) -> None:
        """Count a request that failed before a served model was resolved."""
        self._unrouted[status] = self._unrouted.get(status, 0) + 1

    def for_model(self, name: str, version: str | None) -> ModelMetrics:
        key = (name, version or "")
        if key not in self._models:
            self._models[key] = ModelMetrics(*key)
        return self._models[key]

    def watch_models(self, entries: Callable[[], Iterable[ModelEntry]]) -> None:
        """Report the state, load time, queue depth and in-flight requests of ``entries()`` at each scrape."""
        self.registry.register(_ModelStateCollector(entries))

    def render(self) -> bytes:
        return generate_latest(self.registry)


UNROUTED_LABELS = ("", "", "unknown")
"""model, version and operation of the requests that named nothing served."""


class _ModelMetricsCollector(Collector):
    def __init__(self, models: dict[tuple[str, str], ModelMetrics], unrouted: dict[int, int]) -> None:
        self._models = models
        self._unrouted = unrouted

    def collect(self) -> Iterator[Metric]:
        labels = [*MODEL_LABELS, "operation", "status"]
        requests = CounterMetricFamily(
            "v2serve_requests", "Requests served, by model, version, operation and status code.", labels=labels
        )
        failures = CounterMetricFamily(
            "v2serve_request_failures", "Requests that failed (status 400 and above).", labels=labels
        )
        durations = HistogramMetricFamily(
            "v2serve_request_duration_seconds", "Whole requests.", labels=[*MODEL_LABELS, "operation"]
        )
        families = {
            attribute: HistogramMetricFamily(name, documentation, labels=list(MODEL_LABELS))
            for attribute, name, documentation, _ in _MODEL_HISTOGRAMS
        }
        for metrics in list(self._models.values()):
            by_operation: dict[str, list[LoopHistogram]] = {}
            for (operation, status), (count, histogram) in list(metrics.requests.items()):
                row = [*metrics.labels, operation, str(status)]
                requests.add_metric(row, count[0])
                if status >= 400:
                    failures.add_metric(row, count[0])
                by_operation.setdefault(operation, []).append(histogram)
            for operation, histograms in by_operation.items():
                merged = _merged(histograms)
                durations.add_metric([*metrics.labels, operation], merged.buckets(), merged.sum())
            for attribute, family in families.items():
                histogram = getattr(metrics, attribute)
                family.add_metric(metrics.labels, histogram.buckets(), histogram.sum())
        for status, total in sorted(self._unrouted.items()):
            requests.add_metric([*UNROUTED_LABELS, str(status)], total)
            failures.add_metric([*UNROUTED_LABELS, str(status)], total)
        yield from (requests, failures, durations, *families.values())


def _merged(histograms: list[LoopHistogram]) -> LoopHistogram:
    merged = LoopHistogram(histograms[0].bounds, histograms[0].scale)
    for histogram in histograms:
        merged.counts = [a + b for a, b in zip(merged.counts, histogram.counts, strict=True)]
        merged.total += histogram.total
    return merged


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
        running = GaugeMetricFamily("v2serve_in_flight", "Model executions in progress.", labels=list(MODEL_LABELS))
        for entry in self._entries():
            labels = [entry.name, entry.version or ""]
            state.add_metric([*labels, entry.state.value], 1)
            if entry.load_seconds is not None:
                load.add_metric(labels, entry.load_seconds)
            queued.add_metric(labels, entry.scheduler.waiting)
            running.add_metric(labels, entry.stats.running)
        yield from (state, load, queued, running)

"""Prometheus families rendered from the recorders at each scrape; the only module that imports
prometheus_client (and only when the registry is first built)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from v2serve.metrics.histogram import LoopHistogram
from v2serve.metrics.model import UNROUTED_LABELS, ModelGauge, ModelRecorder
from v2serve.metrics.streams import StreamStats

MODEL_LABELS = ("model", "version")

# Histograms of one model version: (attribute, metric name, help).
_MODEL_HISTOGRAMS = (
    ("queue_wait", "v2serve_queue_wait_seconds", "Waiting for an instance or a batch."),
    ("decode", "v2serve_decode_seconds", "Pre-processing: parsing and decoding a request."),
    (
        "predict",
        "v2serve_predict_seconds",
        "One call of the model's preprocess, predict and postprocess (a batch is one).",
    ),
    ("encode", "v2serve_encode_seconds", "Post-processing: encoding the outputs."),
    ("batch_size", "v2serve_batch_size", "Requests per model execution."),
)


def build_registry(
    models: dict[tuple[str, str], ModelRecorder], unrouted: dict[int, int], gauges: Callable[[], Iterable[ModelGauge]]
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_RecorderCollector(models, unrouted))
    registry.register(_GaugeCollector(gauges))
    return registry


class _RecorderCollector(Collector):
    def __init__(self, models: dict[tuple[str, str], ModelRecorder], unrouted: dict[int, int]) -> None:
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
            for attribute, name, documentation in _MODEL_HISTOGRAMS
        }
        for recorder in list(self._models.values()):
            by_operation: dict[str, LoopHistogram] = {}
            for (operation, status), record in list(recorder.requests.items()):
                row = [*recorder.labels, operation, str(status)]
                requests.add_metric(row, record.duration.count)
                if status >= 400:
                    failures.add_metric(row, record.duration.count)
                merged = by_operation.get(operation)
                by_operation[operation] = record.duration if merged is None else merged.merged(record.duration)
            for operation, histogram in by_operation.items():
                durations.add_metric([*recorder.labels, operation], histogram.buckets(), histogram.sum())
            for attribute, family in families.items():
                histogram = getattr(recorder, attribute)
                family.add_metric(recorder.labels, histogram.buckets(), histogram.sum())
        for status, total in sorted(self._unrouted.items()):
            requests.add_metric([*UNROUTED_LABELS, str(status)], total)
            failures.add_metric([*UNROUTED_LABELS, str(status)], total)
        yield from (requests, failures, durations, *families.values())


class _GaugeCollector(Collector):
    def __init__(self, gauges: Callable[[], Iterable[ModelGauge]]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "v2serve_model_state", "1 for the state each model version is in.", labels=[*MODEL_LABELS, "state"]
        )
        load = GaugeMetricFamily("v2serve_model_load_seconds", "Time the last load took.", labels=list(MODEL_LABELS))
        queued = GaugeMetricFamily(
            "v2serve_queue_depth", "Requests waiting for an instance or a batch.", labels=list(MODEL_LABELS)
        )
        running = GaugeMetricFamily("v2serve_in_flight", "Model executions in progress.", labels=list(MODEL_LABELS))
        for gauge in self._gauges():
            labels = [gauge.name, gauge.version or ""]
            state.add_metric([*labels, gauge.state], 1)
            if gauge.load_seconds is not None:
                load.add_metric(labels, gauge.load_seconds)
            queued.add_metric(labels, gauge.waiting)
            running.add_metric(labels, gauge.running)
        yield from (state, load, queued, running)


class StreamCollector(Collector):
    """Records in, results and errors out per topic or stream, and how far each consumer lags behind.

    ``workers``: anything with ``stats`` (StreamStats), ``trigger`` and ``outputs`` (output, error output).
    """

    def __init__(self, workers: Sequence[Any]) -> None:
        self._workers = workers

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["transport", "topic"]
        consumed = CounterMetricFamily("v2serve_stream_records_in", "Messages consumed.", labels=labels)
        results = CounterMetricFamily("v2serve_stream_results_out", "Result records acknowledged.", labels=labels)
        errors = CounterMetricFamily("v2serve_stream_errors_out", "Error records acknowledged.", labels=labels)
        lag = GaugeMetricFamily(
            "v2serve_stream_lag", "Kafka: messages behind the end of the partition.", labels=[*labels, "partition"]
        )
        behind = GaugeMetricFamily(
            "v2serve_stream_behind_milliseconds",
            "Kinesis: milliseconds behind the tip of the shard.",
            labels=[*labels, "shard"],
        )
        for worker in self._workers:
            stats: StreamStats = worker.stats
            transport = worker.trigger
            output, error_output = worker.outputs
            for topic, count in stats.consumed.items():
                consumed.add_metric([transport, topic], count)
            results.add_metric([transport, output], stats.results)
            errors.add_metric([transport, error_output], stats.errors)
            for (topic, partition), value in stats.lag.items():
                lag.add_metric([transport, topic, partition], value)
            for (stream, shard), value in stats.behind_ms.items():
                behind.add_metric([transport, stream, shard], value)
        yield from (consumed, results, errors, lag, behind)


_Values = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""A family's values by (sample name, sorted labels)."""

# Gauges that describe a state rather than an amount: over several workers their largest value is the
# state (every worker loads the same models), where amounts (queue depth, in flight) add up.
_MAX_GAUGES = frozenset({"v2serve_model_state", "v2serve_model_load_seconds"})


def samples(registry: CollectorRegistry) -> list[list[Any]]:
    """The registry's samples as plain values: [family, type, help, sample name, labels, value]."""
    return [
        [family.name, family.type, family.documentation, sample.name, sample.labels, sample.value]
        for family in registry.collect()
        for sample in family.samples
    ]


def render_merged(snapshots: Sequence[Sequence[list[Any]]]) -> bytes:
    """The text exposition of several workers' samples added up (largest value for state gauges)."""
    from prometheus_client import generate_latest

    families: dict[str, tuple[str, str, _Values]] = {}
    for worker in snapshots:
        for name, kind, documentation, sample, labels, value in worker:
            _, _, values = families.setdefault(name, (kind, documentation, {}))
            key = (sample, tuple(sorted(labels.items())))
            if key in values and kind == "gauge" and name in _MAX_GAUGES:
                values[key] = max(values[key], value)
            else:
                values[key] = values.get(key, 0.0) + value
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_MergedCollector(families))
    return bytes(generate_latest(registry))


class _MergedCollector(Collector):
    def __init__(self, families: dict[str, tuple[str, str, _Values]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for name, (kind, documentation, values) in self._families.items():
            family = Metric(name, documentation, kind)
            for (sample, labels), value in values.items():
                family.add_sample(sample, dict(labels), value)
            yield family

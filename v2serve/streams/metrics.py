"""Prometheus metrics of the stream consumers, read from their counters at each scrape."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from v2serve.streams.consumers import StreamWorker


class StreamCollector(Collector):
    """Records in, results and errors out per topic or stream, and how far each consumer lags behind."""

    def __init__(self, workers: Sequence[StreamWorker]) -> None:
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
            stats, transport = worker.stats, worker.trigger
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

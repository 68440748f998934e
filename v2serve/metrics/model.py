"""What one model version records, and the two renderings of it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from v2serve.metrics.histogram import BATCH_BUCKETS, LoopHistogram, seconds_histogram
from v2serve.protocol import schemas


class ModelRecorder:
    """The observations of one model version; the request path writes each once.

    ``queue_wait``: waiting for an instance or a batch; ``decode``: parsing and decoding a request;
    ``predict``: one call of preprocess, predict and postprocess (a batch is one); ``encode``: encoding the
    outputs; ``requests``: whole requests by operation and status. Triton's statistics are derived from
    them: ``compute_input`` is decode, ``compute_infer`` predict, ``compute_output`` encode, and
    success/fail the tensor operations' requests by status.
    """

    __slots__ = (
        "_last_inference_ns",
        "batch_size",
        "decode",
        "encode",
        "labels",
        "predict",
        "queue_wait",
        "requests",
        "running",
    )

    def __init__(self, name: str, version: str | None) -> None:
        self.labels = [name, version or ""]
        self.queue_wait = seconds_histogram()
        self.decode = seconds_histogram()
        self.predict = seconds_histogram()
        self.encode = seconds_histogram()
        self.batch_size = LoopHistogram(BATCH_BUCKETS)
        self.requests: dict[tuple[str, int], RequestRecord] = {}
        self._last_inference_ns = 0
        """perf_counter_ns at the end of the last inference, 0 before the first."""
        self.running = 0
        """Model executions in progress."""

    def queued(self, ns: int) -> None:
        self.queue_wait.observe(ns)

    def not_queued(self) -> None:
        """A request that found a free instance: a wait of 0, without the bucket search."""
        self.queue_wait.counts[0] += 1

    def decoded(self, ns: int) -> None:
        self.decode.observe(ns)

    def executed(self, ns: int, requests: int) -> None:
        self.predict.observe(ns)
        batch_size = self.batch_size
        if requests == 1:  # most calls: the first bucket, without the search
            batch_size.counts[0] += 1
            batch_size.total += 1
        else:
            batch_size.observe(requests)

    def encoded(self, ns: int) -> None:
        self.encode.observe(ns)

    def finished(self, started_ns: int, operation: str, status: int, *, inference: bool) -> None:
        """A request ended; ``inference`` requests (tensor operations, not custom ones) count in Triton's
        statistics."""
        record = self.requests.get((operation, status))
        if record is None:
            record = self.requests[(operation, status)] = RequestRecord(inference, seconds_histogram())
        now = time.perf_counter_ns()
        record.duration.observe(now - started_ns)
        if inference:
            self._last_inference_ns = now  # the wall clock is read when asked, not per request

    @property
    def last_inference_ms(self) -> int:
        """When the last inference ended, in milliseconds since the epoch (Triton's ``last_inference``); 0
        before the first."""
        if not self._last_inference_ns:
            return 0
        return (time.time_ns() - (time.perf_counter_ns() - self._last_inference_ns)) // 1_000_000

    def triton_statistics(self) -> schemas.ModelStatistics:
        """The version's statistics in the shape of Triton's statistics extension."""
        success, fail = _Duration(), _Duration()
        for (_, status), record in list(self.requests.items()):
            if record.inference:
                (success if status < 400 else fail).add(record.duration)
        return {
            "name": self.labels[0],
            "version": self.labels[1],
            "last_inference": self.last_inference_ms,
            "inference_count": success.count,
            "execution_count": self.predict.count,
            "inference_stats": {
                "success": success.to_dict(),
                "fail": fail.to_dict(),
                "queue": _Duration.of(self.queue_wait),
                "compute_input": _Duration.of(self.decode),
                "compute_infer": _Duration.of(self.predict),
                "compute_output": _Duration.of(self.encode),
            },
            "batch_stats": [],
        }


@dataclass(slots=True)
class RequestRecord:
    inference: bool
    duration: LoopHistogram


@dataclass(slots=True)
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, histogram: LoopHistogram) -> None:
        self.count += histogram.count
        self.ns += histogram.total

    def to_dict(self) -> schemas.Duration:
        return {"count": self.count, "ns": self.ns}

    @staticmethod
    def of(histogram: LoopHistogram) -> schemas.Duration:
        return {"count": histogram.count, "ns": histogram.total}


UNROUTED_LABELS = ("", "", "unknown")
"""model, version and operation of the requests that named nothing served."""


@dataclass(frozen=True, slots=True)
class ModelGauge:
    """What a model version is at a scrape: values read from the registry, never kept apart from it."""

    name: str
    version: str | None
    state: str
    load_seconds: float | None
    waiting: int
    running: int

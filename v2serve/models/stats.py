"""Per-model inference statistics, in the shape of Triton's statistics extension."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from v2serve.protocol import schemas
from v2serve.protocol.schemas import ModelStatistics

if TYPE_CHECKING:
    from v2serve.models.metrics import ModelMetrics


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def to_dict(self) -> schemas.Duration:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class ModelStats:
    """Counters of one model version. Only the event loop writes them, so they need no lock.

    ``success``/``fail``: whole requests; ``queue``: waiting for an instance or a batch; ``compute_input``:
    decoding; ``compute_infer``: predict calls (a batch is one); ``compute_output``: encoding. Every
    observation also goes to the version's Prometheus metrics, when the server keeps them.
    """

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    running: int = 0
    """Model executions in progress."""
    metrics: ModelMetrics | None = None

    def queued(self, ns: int) -> None:
        self.queue.add(ns)
        if self.metrics is not None:
            self.metrics.queue_wait.observe(ns)

    def decoded(self, ns: int) -> None:
        self.compute_input.add(ns)
        if self.metrics is not None:
            self.metrics.decode.observe(ns)

    def executed(self, ns: int, requests: int) -> None:
        self.compute_infer.add(ns)
        self.execution_count += 1
        if self.metrics is not None:
            self.metrics.predict.observe(ns)
            self.metrics.batch_size.observe(requests)

    def encoded(self, ns: int) -> None:
        self.compute_output.add(ns)
        if self.metrics is not None:
            self.metrics.encode.observe(ns)

    def finished(self, started_ns: int, operation: str, status: int, *, inference: bool) -> None:
        """A request ended; ``inference`` requests (not custom operations) count in Triton's statistics."""
        elapsed = time.perf_counter_ns() - started_ns
        if inference:
            ok = status < 400
            (self.success if ok else self.fail).add(elapsed)
            if ok:
                self.inference_count += 1
            self.last_inference_ms = time.time_ns() // 1_000_000
        if self.metrics is not None:
            self.metrics.request(operation, status, elapsed)

    def to_dict(self, name: str, version: str | None) -> ModelStatistics:
        return {
            "name": name,
            "version": version or "",
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_dict(),
                "fail": self.fail.to_dict(),
                "queue": self.queue.to_dict(),
                "compute_input": self.compute_input.to_dict(),
                "compute_infer": self.compute_infer.to_dict(),
                "compute_output": self.compute_output.to_dict(),
            },
            "batch_stats": [],
        }

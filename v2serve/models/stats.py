"""Per-model inference statistics, in the shape of Triton's statistics extension."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class ModelStats:
    """Counters of one model version. Only the event loop writes them, so they need no lock.

    ``success``/``fail``: whole requests; ``queue``: waiting for an instance or a batch; ``compute_input``:
    decoding; ``compute_infer``: predict calls (a batch is one); ``compute_output``: encoding.
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

    def finished(self, started_ns: int, ok: bool) -> None:
        (self.success if ok else self.fail).add(time.perf_counter_ns() - started_ns)
        if ok:
            self.inference_count += 1
        self.last_inference_ms = time.time_ns() // 1_000_000

    def to_dict(self, name: str, version: str | None) -> dict[str, Any]:
        return {
            "name": name,
            "version": version or "",
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                key: getattr(self, key).to_dict()
                for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
            },
            "batch_stats": [],
        }

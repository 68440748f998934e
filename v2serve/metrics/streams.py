"""Counters of one stream consumer, for logs, tests and metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class StreamStats:
    consumed: Counter[str] = field(default_factory=Counter)
    """Messages taken from the input, by topic or stream."""

    results: int = 0
    """Result records acknowledged by the output."""

    errors: int = 0
    """Error records acknowledged by the error output."""

    lag: dict[tuple[str, str], int] = field(default_factory=dict)
    """Kafka: messages behind the end of each (topic, partition) when last fetched."""

    behind_ms: dict[tuple[str, str], int] = field(default_factory=dict)
    """Kinesis: milliseconds behind the tip of each (stream, shard) when last read."""

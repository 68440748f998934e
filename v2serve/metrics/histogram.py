"""A histogram written from one thread only (the event loop), so without a lock."""

from __future__ import annotations

import bisect

# Seconds: from 100 µs (a tiny model's decode) to 30 s (a deadline's scale).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
NANOSECONDS = 1_000_000_000


class LoopHistogram:
    """Bucket counts and a total. Observations come in integer units ``scale`` times smaller than the
    rendered ones (nanoseconds for histograms of seconds), so the request path neither divides nor compares
    floats. (prometheus-client's own Histogram takes a lock per observation and walks every bucket.)"""

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

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound, as Prometheus wants them."""
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return cumulative

    def sum(self) -> float:
        """The sum of the observations, in the rendered unit."""
        return self.total / self.scale

    def merged(self, other: LoopHistogram) -> LoopHistogram:
        merged = LoopHistogram(self.bounds, self.scale)
        merged.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        merged.total = self.total + other.total
        return merged


def seconds_histogram() -> LoopHistogram:
    return LoopHistogram(LATENCY_BUCKETS, scale=NANOSECONDS)

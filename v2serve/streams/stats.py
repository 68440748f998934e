"""Counters of one stream consumer, for logs, tests and metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class StreamStats:
    consumed: int = 0
    """Messages taken from the input."""

    results: int = 0
    """Result records acknowledged by the output."""

    errors: int = 0
    """Error records acknowledged by the error output."""
